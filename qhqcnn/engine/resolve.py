"""Map a Qiskit operation to a :mod:`gates` model plus the expressions of its angles.

Parameterized gates are recognised as ``U``-family gates (u, u3, u2, r, cu3, cu) or, for any
one-angle gate, as ``exp(-i a H)`` when Qiskit's own matrix is exactly of that form (rx, ry, rz,
p, u1, rxx, ryy, rzz, rzx, cp, crx, cry, crz, mcphase, ...: ``H`` is read off Qiskit's matrix, so
conventions and global phases match). Gates without free parameters use Qiskit's dense matrix.
Everything else returns ``None`` and is decomposed by the compiler through its definition.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg
from qiskit.circuit import Gate, Instruction, ParameterExpression
from qiskit.quantum_info import Operator

from .expressions import AngleLike
from .gates import ControlledGate, ExponentialGate, FixedGate, GateModel, UGate

#: Gates without parameters that have at most this many qubits use their dense matrix.
MAX_DENSE_FIXED_QUBITS = 6

_U = UGate()
_U_PHASE = UGate(with_phase=True)
_EXPONENTIAL_CACHE: dict[tuple, ExponentialGate | None] = {}


def _is_symbolic(param: object) -> bool:
    return isinstance(param, ParameterExpression) and bool(param.parameters)


def is_parameterized(op: Instruction) -> bool:
    """True if any parameter of ``op`` is a free expression."""
    return any(_is_symbolic(p) for p in op.params)


def _matrix_at(op: Gate, angle: float) -> np.ndarray:
    probe = op.copy()
    probe.params = [angle]
    return Operator(probe).data


def _exponential_model(op: Gate) -> ExponentialGate | None:
    """``exp(-i a H)`` model of a one-angle gate, if Qiskit's matrix has exactly that form."""
    try:
        identity = np.eye(1 << op.num_qubits)
        if not np.allclose(_matrix_at(op, 0.0), identity, rtol=0, atol=1e-12):
            return None
        probe = 0.25
        h = 1j * scipy.linalg.logm(_matrix_at(op, probe)) / probe
        h = (h + h.conj().T) / 2
        for angle in (1.1, -2.7, 5.3):
            expected = scipy.linalg.expm(-1j * angle * h)
            if not np.allclose(_matrix_at(op, angle), expected, rtol=0, atol=1e-11):
                return None
    except Exception:  # noqa: BLE001 - any failure means "not this family"
        return None
    h.real[np.abs(h.real) < 1e-15] = 0.0
    h.imag[np.abs(h.imag) < 1e-15] = 0.0
    return ExponentialGate(h, name=op.name)


def _cached_exponential(op: Gate) -> ExponentialGate | None:
    if getattr(op, "_standard_gate", None) is None:
        return _exponential_model(op)  # custom gate: its matrix is not determined by its name
    key = (op.name, op.num_qubits, getattr(op, "ctrl_state", None))
    if key not in _EXPONENTIAL_CACHE:
        _EXPONENTIAL_CACHE[key] = _exponential_model(op)
    return _EXPONENTIAL_CACHE[key]


def _u_family(op: Gate) -> tuple[GateModel, list[AngleLike]] | None:
    p = list(op.params)
    half_pi = math.pi / 2
    if op.name in ("u", "u3"):
        return _U, p
    if op.name == "u2":
        return _U, [half_pi, p[0], p[1]]
    if op.name == "r":
        return _U, [p[0], p[1] - half_pi, half_pi - p[1]]
    if op.name == "cu3":
        return ControlledGate(_U, 1, op.ctrl_state), p
    if op.name == "cu":
        return ControlledGate(_U_PHASE, 1, op.ctrl_state), p
    return None


def resolve(op: Instruction) -> tuple[GateModel, list[AngleLike]] | None:
    """``(model, angle expressions)`` for ``op``, or ``None`` if it must be decomposed."""
    if not isinstance(op, Gate):
        return None
    if not is_parameterized(op):
        if op.num_qubits > MAX_DENSE_FIXED_QUBITS and op.definition is not None:
            return None
        try:
            return FixedGate(Operator(op).data, name=op.name), []
        except Exception:  # noqa: BLE001 - no matrix: let the compiler decompose it
            return None
    if getattr(op, "_standard_gate", None) is not None:
        family = _u_family(op)
        if family is not None:
            return family
    if len(op.params) == 1:
        model = _cached_exponential(op)
        if model is not None:
            return model, list(op.params)
    return None
