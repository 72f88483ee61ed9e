"""Gate models: how a gate's unitary (and its angle derivatives) depends on its angles.

Every model works on NumPy arrays in complex128 with Qiskit's conventions: the first qubit of a
gate is the least significant bit of its matrix index. Angles come with arbitrary leading batch
dimensions, ``(..., num_angles)``, and matrices are returned as ``(..., d, d)``.

Gradients use *generators* ``G(a)^dagger @ dG/da_k`` (one ``d x d`` matrix per angle): they are what
an adjoint sweep needs, and for ``exp(-i a H)`` gates they are the constant ``-i H``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from functools import cached_property

import numpy as np


class GateModel(ABC):
    """A family of unitaries ``G(angles)`` acting on ``num_qubits`` qubits."""

    num_qubits: int
    num_angles: int

    @property
    def dim(self) -> int:
        """Matrix dimension ``2**num_qubits``."""
        return 1 << self.num_qubits

    @abstractmethod
    def matrices(self, angles: np.ndarray) -> np.ndarray:
        """Unitaries for angles of shape ``(..., num_angles)``: shape ``(..., d, d)``."""

    @abstractmethod
    def generators(self, angles: np.ndarray) -> np.ndarray:
        """``G^dagger dG/da_k`` for every angle: shape ``(..., num_angles, d, d)``."""

    @property
    def constant_generators(self) -> np.ndarray | None:
        """Generators of shape ``(num_angles, d, d)`` when they do not depend on the angles."""
        return None


class FixedGate(GateModel):
    """A gate without free angles (H, CX, a fused block of constant gates, ...)."""

    num_angles = 0

    def __init__(self, matrix: np.ndarray, name: str = "fixed") -> None:
        self.matrix = np.ascontiguousarray(matrix, dtype=np.complex128)
        self.num_qubits = int(self.matrix.shape[0]).bit_length() - 1
        self.name = name

    def matrices(self, angles: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.matrix, angles.shape[:-1] + self.matrix.shape)

    def generators(self, angles: np.ndarray) -> np.ndarray:
        return np.zeros(angles.shape[:-1] + (0,) + self.matrix.shape, dtype=np.complex128)

    @property
    def constant_generators(self) -> np.ndarray:
        return np.zeros((0,) + self.matrix.shape, dtype=np.complex128)


class ExponentialGate(GateModel):
    """``G(a) = exp(-i a H)`` for a fixed Hermitian ``H`` (RX, RZZ, P, CRY, MCPhase, ...)."""

    num_angles = 1

    def __init__(self, hamiltonian: np.ndarray, name: str = "exp") -> None:
        h = np.asarray(hamiltonian, dtype=np.complex128)
        h = (h + h.conj().T) / 2
        self.hamiltonian = h
        self.num_qubits = int(h.shape[0]).bit_length() - 1
        self.name = name
        off_diagonal = h - np.diag(np.diag(h))
        self._diagonal = np.diag(h).real.copy() if np.abs(off_diagonal).max() < 1e-14 else None
        values, vectors = np.linalg.eigh(h)
        self._values, self._vectors = values, vectors
        scale = np.abs(values).max()
        # H = s P with P^2 = I (Pauli rotations): exp(-iaH) = cos(as) I - i sin(as) P.
        involutory = scale > 0 and np.allclose(np.abs(values), scale, rtol=0, atol=1e-13)
        self._pauli = (scale, h / scale) if involutory and self._diagonal is None else None

    def matrices(self, angles: np.ndarray) -> np.ndarray:
        a = angles[..., 0]
        if self._diagonal is not None:
            phases = np.exp(-1j * a[..., None] * self._diagonal)
            out = np.zeros(a.shape + (self.dim, self.dim), dtype=np.complex128)
            idx = np.arange(self.dim)
            out[..., idx, idx] = phases
            return out
        if self._pauli is not None:  # cos(as) I - i sin(as) P, written entry by entry
            scale, pauli = self._pauli
            x = a * scale
            out = np.multiply.outer(np.sin(x), -1j * pauli)
            idx = np.arange(self.dim)
            out[..., idx, idx] += np.cos(x)[..., None]
            return out
        phases = np.exp(-1j * a[..., None] * self._values)
        return (self._vectors * phases[..., None, :]) @ self._vectors.conj().T

    def generators(self, angles: np.ndarray) -> np.ndarray:
        return np.broadcast_to(
            self.constant_generators, angles.shape[:-1] + self.constant_generators.shape
        )

    @cached_property
    def constant_generators(self) -> np.ndarray:
        return (-1j * self.hamiltonian)[None]


class UGate(GateModel):
    """Qiskit's ``U(theta, phi, lam)`` (= U3); with ``with_phase`` a 4th angle ``gamma`` multiplies
    it by ``exp(i gamma)`` (the target block of ``CUGate``)."""

    num_qubits = 1

    def __init__(self, with_phase: bool = False) -> None:
        self.with_phase = with_phase
        self.num_angles = 4 if with_phase else 3
        self.name = "u_phase" if with_phase else "u"

    def _parts(self, angles: np.ndarray):
        theta, phi, lam = angles[..., 0], angles[..., 1], angles[..., 2]
        c, s = np.cos(theta / 2), np.sin(theta / 2)
        e_phi, e_lam = np.exp(1j * phi), np.exp(1j * lam)
        return c, s, e_phi, e_lam

    def matrices(self, angles: np.ndarray) -> np.ndarray:
        c, s, e_phi, e_lam = self._parts(angles)
        out = np.empty(angles.shape[:-1] + (2, 2), dtype=np.complex128)
        out[..., 0, 0] = c
        out[..., 0, 1] = -e_lam * s
        out[..., 1, 0] = e_phi * s
        out[..., 1, 1] = e_phi * e_lam * c
        if self.with_phase:
            out *= np.exp(1j * angles[..., 3])[..., None, None]
        return out

    def generators(self, angles: np.ndarray) -> np.ndarray:
        # G^dagger dG for U(theta, phi, lam); the global phase factor cancels in G^dagger dG.
        c, s, e_phi, e_lam = self._parts(angles)
        out = np.zeros(angles.shape[:-1] + (self.num_angles, 2, 2), dtype=np.complex128)
        out[..., 0, 0, 1] = -0.5 * e_lam
        out[..., 0, 1, 0] = 0.5 * e_lam.conj()
        out[..., 1, 0, 0] = 1j * s * s
        out[..., 1, 0, 1] = 1j * s * c * e_lam
        out[..., 1, 1, 0] = 1j * s * c * e_lam.conj()
        out[..., 1, 1, 1] = 1j * c * c
        out[..., 2, 1, 1] = 1j
        if self.with_phase:
            out[..., 3, 0, 0] = 1j
            out[..., 3, 1, 1] = 1j
        return out


class ControlledGate(GateModel):
    """``base`` applied when the control qubits (the gate's first qubits) are in ``ctrl_state``."""

    def __init__(self, base: GateModel, num_ctrl_qubits: int, ctrl_state: int) -> None:
        self.base = base
        self.num_ctrl_qubits = num_ctrl_qubits
        self.ctrl_state = ctrl_state
        self.num_qubits = base.num_qubits + num_ctrl_qubits
        self.num_angles = base.num_angles
        self.name = f"c{num_ctrl_qubits}_{getattr(base, 'name', 'gate')}"
        self._block = ctrl_state + (np.arange(base.dim) << num_ctrl_qubits)

    def _embed(self, block: np.ndarray, fill_identity: bool) -> np.ndarray:
        lead = block.shape[:-2]
        out = np.zeros(lead + (self.dim, self.dim), dtype=np.complex128)
        if fill_identity:
            idx = np.arange(self.dim)
            out[..., idx, idx] = 1.0
        out[..., self._block[:, None], self._block[None, :]] = block
        return out

    def matrices(self, angles: np.ndarray) -> np.ndarray:
        return self._embed(self.base.matrices(angles), fill_identity=True)

    def generators(self, angles: np.ndarray) -> np.ndarray:
        return self._embed(self.base.generators(angles), fill_identity=False)

    @cached_property
    def constant_generators(self) -> np.ndarray | None:
        base = self.base.constant_generators
        return None if base is None else self._embed(base, fill_identity=False)
