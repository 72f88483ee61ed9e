"""Encodings, in one home: how classical values enter a circuit.

An :class:`Encoding` has two halves: the *circuit* (a parameterized block whose inputs are
angles) and the *classical map* from values in [0, 1] to those angles, in torch (batched and
differentiable), so that every template stays a plain parameterized circuit (exportable,
transpilable, runnable on every backend). Encodings are registered by name
(:func:`register_encoding`); the templates look them up, so a new encoding is one
``register_encoding`` call, not an edit of the templates.

========================  =============================  ===================================
name                      circuit (n values)             classical map (values in [0, 1])
========================  =============================  ===================================
``angle``                 RY(x_i) on qubit i (n qubits)  π·x
``superposition``         H then RY(x_i) (n qubits)      π·x
``amplitude``             RY tree of the normalised      tree angles (:func:`amplitude_angles`)
                          vector (log2 n qubits)
========================  =============================  ===================================
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from qiskit import QuantumCircuit
from qiskit.circuit import ParameterVector
from qiskit.circuit.library import CXGate, HGate, RYGate

from qhqcnn.errors import ConfigError


def angle_encoding(num_qubits: int, *, superposition: bool = False, prefix: str = "x"):
    """Angle ("qubit") encoding: RY(x_i) on qubit i, optionally preceded by H ("superposition").

    RY(x)|0⟩ = cos(x/2)|0⟩ + sin(x/2)|1⟩, so ⟨Z_i⟩ = cos x_i right after encoding; with the H first,
    RY(x)H|0⟩ gives ⟨X_i⟩ = cos x_i and ⟨Z_i⟩ = −sin x_i. Returns ``(circuit, inputs)``::

             ┌───┐┌───────┐
        q_0: ┤ H ├┤ Ry(x[0]) ├   (H only with superposition=True)
             └───┘└───────┘
    """
    inputs = ParameterVector(prefix, num_qubits)
    circuit = QuantumCircuit(num_qubits, name="encoding")
    for qubit in range(num_qubits):
        if superposition:
            circuit.append(HGate(), [qubit])
        circuit.append(RYGate(inputs[qubit]), [qubit])
    return circuit, inputs


# -- classical halves of the encodings (torch, batched, differentiable) ----------------------
def pixel_angles(values: torch.Tensor) -> torch.Tensor:
    """Angle encoding's classical map: pixel values x ∈ [0, 1] → RY angles π·x.

    x = 0 leaves a qubit in |0⟩ (⟨Z⟩ = 1), x = 1 flips it to |1⟩ (⟨Z⟩ = −1), x = ½ gives |+⟩.
    """
    return math.pi * values


def _safe_norm(blocks: torch.Tensor) -> torch.Tensor:
    """L2 norm over the last axis with a zero (not NaN) gradient at the zero vector."""
    squares = blocks.square().sum(-1)
    positive = squares > 0
    return torch.where(positive, torch.where(positive, squares, 1.0).sqrt(), 0.0)


def _safe_atan2(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``atan2(y, x)`` that is 0 with a zero (not NaN) gradient at the origin."""
    origin = (x == 0) & (y == 0)
    angle = torch.atan2(torch.where(origin, 0.0, y), torch.where(origin, 1.0, x))
    return torch.where(origin, 0.0, angle)


def _gray(i: int) -> int:
    return i ^ (i >> 1)


def _mottonen_matrix(num_controls: int) -> np.ndarray:
    """``T`` with θ = α @ T: the RY angles of a uniformly controlled RY from its target angles.

    A uniformly controlled RY (angle α_j when the controls hold j) is decomposed into 2^k
    RY(θ_i)·CNOT pairs along a Gray code (Möttönen et al. 2004); with controls j the target sees
    Σ_i (−1)^{popcount(j & gray(i))} θ_i = α_j, i.e. α = M θ with M M^T = 2^k I.
    """
    size = 1 << num_controls
    signs = np.array(
        [[(-1) ** bin(j & _gray(i)).count("1") for i in range(size)] for j in range(size)],
        dtype=np.float64,
    )
    return signs / size


def amplitude_angles(values: torch.Tensor) -> torch.Tensor:
    """Amplitude encoding's classical map: ``(..., 2^n)`` real values → ``(..., 2^n − 1)`` angles.

    The circuit of :func:`amplitude_encoding` fed these angles prepares Σ_i v_i/‖v‖ |i⟩ (Qiskit
    qubit order: value i ↔ basis state |i⟩, qubit 0 least significant). The vector is
    L2-normalised, so its norm is lost (v and 2v give the same state); any signs are kept; the
    zero vector (e.g. a black patch) is mapped to |0…0⟩ with zero gradient, never NaN.

    Angles are ordered level by level, most significant qubit first: the 1 angle of qubit n−1,
    then 2 of qubit n−2, …, then 2^{n−1} of qubit 0 — the Gray-code RY angles θ, not the
    tree's split angles α (θ = α·T, see :func:`_mottonen_matrix`).
    """
    size = values.shape[-1]
    num_qubits = size.bit_length() - 1
    if size < 2 or 1 << num_qubits != size:
        raise ConfigError(f"amplitude encoding needs 2^n >= 2 values, got {size}")
    lead = values.shape[:-1]
    angles = []
    for target in range(num_qubits - 1, -1, -1):
        controls = num_qubits - 1 - target
        blocks = values.reshape(*lead, 1 << controls, 2, 1 << target)
        low, high = blocks[..., 0, :], blocks[..., 1, :]
        if target > 0:
            alpha = 2 * _safe_atan2(_safe_norm(high), _safe_norm(low))
        else:  # leaf level: signed amplitudes, so negative values are kept
            alpha = 2 * _safe_atan2(high[..., 0], low[..., 0])
        transform = torch.as_tensor(
            _mottonen_matrix(controls), dtype=values.dtype, device=values.device
        )
        angles.append(alpha @ transform)
    return torch.cat(angles, dim=-1)


# -- encodings ---------------------------------------------------------------------------------
def patch_angle_encoding(num_values: int, *, prefix: str = "x"):
    """Angle encoding of a flattened patch: RY(π·x_i) on qubit i (row-major pixel order).

    The template input is the angle π·x_i (:func:`pixel_angles` computes it). For a 2×2 patch::

        pixels      qubits
        ┌────┬────┐  q_0: ─ Ry(π·x00) ─
        │x00 │x01 │  q_1: ─ Ry(π·x01) ─
        ├────┼────┤  q_2: ─ Ry(π·x10) ─
        │x10 │x11 │  q_3: ─ Ry(π·x11) ─
        └────┴────┘
    """
    return angle_encoding(num_values, prefix=prefix)


def _uniformly_controlled_ry(
    circuit: QuantumCircuit, angles: Sequence, target: int, controls: Sequence[int]
) -> None:
    """Append RY(θ_0) CX RY(θ_1) CX … (Gray-code CNOT controls) onto ``target``."""
    size = len(angles)
    for i, angle in enumerate(angles):
        circuit.append(RYGate(angle), [target])
        if controls:
            changed = _gray(i) ^ _gray((i + 1) % size)
            circuit.append(CXGate(), [controls[changed.bit_length() - 1], target])


def amplitude_encoding(num_qubits: int, *, prefix: str = "a"):
    """Amplitude encoding of 2^n real values on n qubits as a parameterized RY tree.

    Möttönen-style state preparation restricted to real amplitudes: qubit n−1 gets one RY, then
    each lower qubit a uniformly controlled RY (controlled by all higher qubits) decomposed into
    RY + CNOT pairs along a Gray code. 2^n − 1 input angles and 2^n − 2 CNOTs; inputs come from
    :func:`amplitude_angles`. Returns ``(circuit, inputs)``. For 2 qubits::

        q_0: ────────────┤ Ry(a1) ├┤ X ├┤ Ry(a2) ├┤ X ├
             ┌────────┐  └────────┘└─┬─┘└────────┘└─┬─┘
        q_1: ┤ Ry(a0) ├──────────────■──────────────■──
             └────────┘
    """
    if num_qubits < 1:
        raise ConfigError(f"amplitude encoding needs >= 1 qubit, got {num_qubits}")
    inputs = ParameterVector(prefix, (1 << num_qubits) - 1)
    circuit = QuantumCircuit(num_qubits, name="amplitude")
    start = 0
    for target in range(num_qubits - 1, -1, -1):
        count = 1 << (num_qubits - 1 - target)
        controls = list(range(target + 1, num_qubits))
        _uniformly_controlled_ry(circuit, inputs[start : start + count], target, controls)
        start += count
    return circuit, inputs


# -- the registry ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Encoding:
    """A registered encoding.

    Attributes:
        name: its name in configs (``ModelSpec.encoding``) and on the command line.
        circuit: ``circuit(num_values) → (QuantumCircuit, inputs)``: the encoding block.
        qubits: ``qubits(num_values)`` → how many qubits it needs (``ConfigError`` if it
            cannot encode that many values).
        classical: values in [0, 1] (last axis: the ``num_values``) → the block's input angles.
        one_per_qubit: whether it encodes one value per qubit (what HQCNN's bridge needs).
    """

    name: str
    circuit: Callable[[int], tuple[QuantumCircuit, ParameterVector]]
    qubits: Callable[[int], int]
    classical: Callable[[torch.Tensor], torch.Tensor]
    one_per_qubit: bool = True


_ENCODINGS: dict[str, Encoding] = {}


def register_encoding(encoding: Encoding) -> Encoding:
    """Register ``encoding`` under its name (replacing an earlier one of that name)."""
    _ENCODINGS[encoding.name] = encoding
    return encoding


def get_encoding(name: str) -> Encoding:
    """The encoding registered as ``name`` (a ``ConfigError`` naming the choices if none)."""
    if name not in _ENCODINGS:
        raise ConfigError(f"unknown encoding {name!r}; choose one of {', '.join(_ENCODINGS)}")
    return _ENCODINGS[name]


def encoding_names() -> list[str]:
    return list(_ENCODINGS)


def _one_qubit_per_value(num_values: int) -> int:
    if num_values < 1:
        raise ConfigError(f"an encoding needs >= 1 value, got {num_values}")
    return num_values


def _amplitude_qubits(num_values: int) -> int:
    if num_values < 2 or num_values & (num_values - 1):
        raise ConfigError(f"amplitude encoding needs 2^n values; got {num_values}")
    return num_values.bit_length() - 1


register_encoding(
    Encoding("angle", lambda n: angle_encoding(n), _one_qubit_per_value, pixel_angles)
)
register_encoding(
    Encoding(
        "superposition",
        lambda n: angle_encoding(n, superposition=True),
        _one_qubit_per_value,
        pixel_angles,
    )
)
register_encoding(
    Encoding(
        "amplitude",
        lambda n: amplitude_encoding(_amplitude_qubits(n)),
        _amplitude_qubits,
        amplitude_angles,
        one_per_qubit=False,
    )
)
