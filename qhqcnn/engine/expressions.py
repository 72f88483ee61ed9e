"""Turn gate-angle expressions (floats or ``ParameterExpression``) into an :class:`AngleMap`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from qiskit.circuit import ParameterExpression

from .program import AngleMap, NonlinearAngle

AngleLike = float | ParameterExpression


def _as_float(value: object) -> float | None:
    """``value`` as a real float if it is a number (or a parameter-free expression)."""
    if isinstance(value, ParameterExpression):
        if value.parameters:
            return None
        value = complex(value)
    if isinstance(value, complex):
        if abs(value.imag) > 1e-12:
            raise ValueError(f"gate angle {value} is complex")
        return float(value.real)
    return float(value)  # type: ignore[arg-type]


def _affine_row(expr: ParameterExpression, index: dict[str, int], width: int):
    """``(coefficients, offset)`` if ``expr`` is affine in its parameters, else ``None``."""
    row = np.zeros(width)
    for param in expr.parameters:
        coeff = _as_float(expr.gradient(param))
        if coeff is None:
            return None
        row[index[param.name]] = coeff
    offset = _as_float(expr.bind({p: 0.0 for p in expr.parameters}))
    return row, offset


def _nonlinear(slot: int, expr: ParameterExpression, index: dict[str, int]) -> NonlinearAngle:
    """A vectorized NumPy function (and its partial derivatives) for a non-affine expression."""
    import sympy

    sym = expr.sympify()
    names = sorted(p.name for p in expr.parameters)
    by_name = {s.name: s for s in sym.free_symbols}
    symbols = [by_name.get(name, sympy.Symbol(name)) for name in names]
    value = sympy.lambdify(symbols, sym, "numpy")
    partials = tuple(sympy.lambdify(symbols, sympy.diff(sym, s), "numpy") for s in symbols)
    return NonlinearAngle(slot, tuple(index[n] for n in names), value, partials)


def build_angle_map(expressions: Sequence[AngleLike], parameter_names: Sequence[str]) -> AngleMap:
    """Angle map for ``expressions`` (one per slot) over parameters in ``parameter_names`` order."""
    index = {name: i for i, name in enumerate(parameter_names)}
    width = len(parameter_names)
    linear = np.zeros((len(expressions), width))
    offset = np.zeros(len(expressions))
    nonlinear: list[NonlinearAngle] = []
    for slot, expr in enumerate(expressions):
        constant = _as_float(expr)
        if constant is not None:
            offset[slot] = constant
            continue
        affine = _affine_row(expr, index, width)  # type: ignore[arg-type]
        if affine is None:
            nonlinear.append(_nonlinear(slot, expr, index))  # type: ignore[arg-type]
        else:
            linear[slot], offset[slot] = affine
    return AngleMap(linear, offset, tuple(nonlinear))
