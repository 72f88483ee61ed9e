"""The engine-independent compiled form of a circuit: gate operations plus an angle map.

A :class:`Program` is what every simulator (statevector here, a density-matrix one later) consumes:
an ordered tuple of :class:`GateOp` (gate model, qubits, indices into the angle vector) and an
:class:`AngleMap` turning the circuit's parameter values into gate angles (exact for affine
expressions, vectorized SymPy functions otherwise).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .gates import GateModel


@dataclass(frozen=True, eq=False)
class GateOp:
    """One gate: ``model`` on ``qubits`` (first = least significant), angles ``slots``."""

    model: GateModel
    qubits: tuple[int, ...]
    slots: tuple[int, ...] = ()

    @property
    def is_fixed(self) -> bool:
        """True when the gate has no angles."""
        return not self.slots


@dataclass(frozen=True, eq=False)
class NonlinearAngle:
    """An angle given by a non-affine expression of some parameters (vectorized SymPy)."""

    slot: int
    parameter_indices: tuple[int, ...]
    value: Callable[..., np.ndarray]
    partials: tuple[Callable[..., np.ndarray], ...]

    def evaluate(self, values: np.ndarray) -> np.ndarray:
        """The angle for every row of ``values`` (shape ``(N, P)``)."""
        args = [values[:, i] for i in self.parameter_indices]
        return np.broadcast_to(np.asarray(self.value(*args), dtype=float), (values.shape[0],))

    def jacobian(self, values: np.ndarray) -> np.ndarray:
        """d angle / d parameter for the used parameters: shape ``(N, len(parameter_indices))``."""
        args = [values[:, i] for i in self.parameter_indices]
        cols = [
            np.broadcast_to(np.asarray(f(*args), dtype=float), (values.shape[0],))
            for f in self.partials
        ]
        return np.stack(cols, axis=1)


@dataclass(frozen=True, eq=False)
class AngleMap:
    """``angles = values @ linear.T + offset`` plus overrides for non-affine slots."""

    linear: np.ndarray  # (S, P)
    offset: np.ndarray  # (S,)
    nonlinear: tuple[NonlinearAngle, ...] = ()

    @property
    def num_slots(self) -> int:
        return self.linear.shape[0]

    @property
    def num_parameters(self) -> int:
        return self.linear.shape[1]

    def evaluate(self, values: np.ndarray) -> np.ndarray:
        """Angles for parameter rows ``values`` of shape ``(N, P)``: shape ``(N, S)``."""
        values = np.asarray(values, dtype=float)
        if values.ndim != 2:
            width = self.num_parameters
            values = values.reshape(-1, width) if width else values.reshape(1, 0)
        if self.num_parameters:
            angles = values @ self.linear.T + self.offset
        else:
            angles = np.broadcast_to(self.offset, (values.shape[0], self.num_slots)).copy()
        for item in self.nonlinear:
            angles[:, item.slot] = item.evaluate(values)
        return angles

    def pullback(self, values: np.ndarray, angle_grads: np.ndarray) -> np.ndarray:
        """Chain rule: ``(N, M, S)`` gradients w.r.t. angles -> ``(N, M, P)`` w.r.t. parameters."""
        grads = angle_grads @ self.linear
        for item in self.nonlinear:
            jac = item.jacobian(values)  # (N, k)
            contrib = angle_grads[..., item.slot][..., None] * jac[:, None, :]
            grads[..., list(item.parameter_indices)] += contrib
        return grads

    def dependency(self) -> np.ndarray:
        """Boolean ``(S, P)``: which parameters each angle depends on."""
        dep = self.linear != 0
        for item in self.nonlinear:
            dep[item.slot] = False
            dep[item.slot, list(item.parameter_indices)] = True
        return dep


@dataclass(frozen=True, eq=False)
class Program:
    """A compiled circuit: ``ops`` applied in order to ``|0...0>``, then ``exp(i global phase)``."""

    num_qubits: int
    ops: tuple[GateOp, ...]
    angle_map: AngleMap
    parameter_names: tuple[str, ...]
    global_phase_slot: int | None = None
    metadata: dict = field(default_factory=dict)

    @property
    def num_parameters(self) -> int:
        return len(self.parameter_names)
