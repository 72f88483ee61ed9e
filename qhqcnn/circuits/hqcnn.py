"""The HQCNN variational circuit and its blocks, as Qiskit parameterized templates.

The default 4-qubit, 2-layer template (``hqcnn_template()``) is::

    encoding      entangling layers (×L)         Fourier attention            rotations
    RY(x_i)  ─  [U3(θ) on all, CX ring] × L  ─  F(φ) · Toffoli ring · F(φ)†  ─  RY(ρ) RZ(ρ')

and measures ⟨Z_i⟩ and ⟨X_i⟩ on every qubit (8 outputs). ``qhqcnn circuits show hqcnn`` prints
the full diagram; the exported library under ``circuits/`` holds PNG/SVG/QASM/QPY versions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from qiskit import QuantumCircuit
from qiskit.circuit import ParameterVector
from qiskit.circuit.library import CCXGate, CPhaseGate, HGate, RYGate, RZGate, n_local

from qhqcnn.circuits.encodings import get_encoding
from qhqcnn.circuits.template import CircuitTemplate, single_qubit_observables
from qhqcnn.errors import ConfigError


def ring_pairs(num_qubits: int) -> list[tuple[int, int]]:
    """CNOT ring (0→1, 1→2, …, n−1→0); a single CNOT for 2 qubits, none for 1."""
    if num_qubits < 2:
        return []
    if num_qubits == 2:
        return [(0, 1)]
    return [(i, (i + 1) % num_qubits) for i in range(num_qubits)]


def entangling_layers(num_qubits: int, reps: int, *, prefix: str = "theta") -> QuantumCircuit:
    """``reps`` × [trainable U3(θ, φ, λ) on every qubit, then a cyclic CNOT ring].

    Built with Qiskit's ``n_local`` (rotation block ``u``, entanglement block ``cx``)::

        ┌──────────────┐
        ┤ U(θ0,θ1,θ2)  ├──■────────────X──
        ├──────────────┤┌─┴─┐          │
        ┤ U(θ3,θ4,θ5)  ├┤ X ├──■───────┼──   … (3 weights per qubit per layer)
        └──────────────┘└───┘
    """
    return (
        n_local(
            num_qubits,
            rotation_blocks="u",
            entanglement_blocks="cx",
            entanglement=ring_pairs(num_qubits),
            reps=reps,
            skip_final_rotation_layer=True,
            parameter_prefix=prefix,
            name="entangling",
        ).decompose(reps=0)
        if reps > 0
        else QuantumCircuit(num_qubits, name="entangling")
    )


def fourier_ladder(num_qubits: int, phases: Sequence) -> QuantumCircuit:
    """QFT-style ladder with trainable phases: H(q_j) then CP(φ_jk) from q_k onto q_j for k > j.

    With φ_jk = π / 2^(k−j) this is exactly Qiskit's ``QFTGate`` applied after a reversal of the
    qubit order (the mirror image of the swap-free QFT; tested), so the ladder maps
    computational-basis patterns to Fourier (phase) patterns.
    ``phases`` holds the n(n−1)/2 angles in (j, k) lexicographic order.
    """
    circuit = QuantumCircuit(num_qubits, name="F")
    index = 0
    for j in range(num_qubits):
        circuit.append(HGate(), [j])
        for k in range(j + 1, num_qubits):
            circuit.append(CPhaseGate(phases[index]), [k, j])
            index += 1
    return circuit


def toffoli_ring(num_qubits: int) -> QuantumCircuit:
    """Local attention: for each qubit i, CCX with its two ring neighbours as controls.

    Qubit i is flipped iff both neighbours i−1 and i+1 are |1⟩: a multiplicative (AND)
    interaction restricted to a window of three qubits, the quantum analogue of the pairwise
    product gating of attention. It is a fixed permutation of basis states (no weights).
    """
    if num_qubits < 3:
        raise ConfigError("the Toffoli attention needs at least 3 qubits")
    circuit = QuantumCircuit(num_qubits, name="A")
    for i in range(num_qubits):
        left, right = (i - 1) % num_qubits, (i + 1) % num_qubits
        circuit.append(CCXGate(), [left, right, i])
    return circuit


def fourier_attention(
    num_qubits: int, *, prefix: str = "phi"
) -> tuple[QuantumCircuit, ParameterVector]:
    """Fourier-inspired attention block F(φ)† · A · F(φ) (F applied first).

    What it computes: the state is taken to a learnable Fourier basis by the phase ladder F(φ),
    the Toffoli ring A gates each qubit on the AND of its neighbours there, and the inverse ladder
    (same φ) returns to the computational basis. Why: as in FNet, a (learnable) Fourier transform
    mixes information across all qubits in one step, and the gating adds content-dependent,
    multiplicative interactions between neighbours. With A removed the block is the identity, so
    it starts as a perturbation of the entangling layers rather than scrambling them. The phases
    are initialised at the QFT values π/2^(k−j). ``n(n−1)/2`` trainable weights.
    """
    phases = ParameterVector(prefix, num_qubits * (num_qubits - 1) // 2)
    ladder = fourier_ladder(num_qubits, list(phases))
    circuit = QuantumCircuit(num_qubits, name="attention")
    circuit.compose(ladder, inplace=True)
    circuit.compose(toffoli_ring(num_qubits), inplace=True)
    circuit.compose(ladder.inverse(), inplace=True)
    return circuit, phases


def rotation_layer(
    num_qubits: int, *, prefix: str = "rho"
) -> tuple[QuantumCircuit, ParameterVector]:
    """Trainable RY(ρ_2i) RZ(ρ_2i+1) on every qubit: sets the measurement basis of each output."""
    weights = ParameterVector(prefix, 2 * num_qubits)
    circuit = QuantumCircuit(num_qubits, name="rotations")
    for qubit in range(num_qubits):
        circuit.append(RYGate(weights[2 * qubit]), [qubit])
        circuit.append(RZGate(weights[2 * qubit + 1]), [qubit])
    return circuit, weights


def qft_phases(num_qubits: int) -> np.ndarray:
    """The textbook QFT phases π/2^(k−j), in the (j, k) order of ``fourier_ladder``."""
    return np.array(
        [np.pi / 2 ** (k - j) for j in range(num_qubits) for k in range(j + 1, num_qubits)]
    )


def hqcnn_template(
    num_qubits: int = 4,
    layers: int = 2,
    *,
    encoding: str = "angle",
    attention: bool = True,
    paulis: Sequence[str] = ("Z", "X"),
    correlators: bool = False,
) -> CircuitTemplate:
    """The HQCNN variational circuit: encoding → L entangling layers → attention → rotations.

    Weights: 3·n·L (U3) + n(n−1)/2 (attention phases, if enabled) + 2·n (final rotations);
    38 for the default n=4, L=2. Outputs: ⟨P_i⟩ for each P in ``paulis`` and every qubit i, then
    with ``correlators`` the two-qubit ⟨Z_i Z_j⟩ of every CNOT-ring pair (i, j) (n more outputs
    for n ≥ 3): more read-out capacity for multi-class tasks at no extra weight.
    """
    if num_qubits < 1:
        raise ConfigError(f"num_qubits must be >= 1, got {num_qubits}")
    if layers < 0:
        raise ConfigError(f"layers must be >= 0, got {layers}")
    chosen = get_encoding(encoding)
    if not chosen.one_per_qubit:
        raise ConfigError(f"the HQCNN encodes one value per qubit; {encoding!r} does not")
    if attention and num_qubits < 3:
        raise ConfigError("the Fourier attention block needs >= 3 qubits (use --no-attention)")

    encoder, inputs = chosen.circuit(num_qubits)
    entangler = entangling_layers(num_qubits, layers)
    circuit = QuantumCircuit(num_qubits, name="hqcnn")
    circuit.compose(encoder, inplace=True)
    circuit.barrier()
    circuit.compose(entangler, inplace=True)
    weight_blocks: list = [list(entangler.parameters)]
    if attention:
        attention_block, phases = fourier_attention(num_qubits)
        circuit.barrier()
        circuit.compose(attention_block, inplace=True)
        weight_blocks.append(list(phases))
    rotations, rho = rotation_layer(num_qubits)
    circuit.barrier()
    circuit.compose(rotations, inplace=True)
    weight_blocks.append(list(rho))
    weights = tuple(p for block in weight_blocks for p in block)
    observables, names = single_qubit_observables(num_qubits, paulis)
    if correlators:
        from qiskit.quantum_info import SparsePauliOp

        pairs = ring_pairs(num_qubits)
        observables += tuple(
            SparsePauliOp.from_sparse_list([("ZZ", [i, j], 1.0)], num_qubits=num_qubits)
            for i, j in pairs
        )
        names += tuple(f"Z{i}Z{j}" for i, j in pairs)
    n_entangling = len(weight_blocks[0])

    def init_weights(rng: np.random.Generator) -> np.ndarray:
        values = [rng.uniform(-np.pi / 4, np.pi / 4, n_entangling)]
        if attention:
            values.append(qft_phases(num_qubits))
        values.append(rng.uniform(-np.pi / 8, np.pi / 8, 2 * num_qubits))
        return np.concatenate(values)

    return CircuitTemplate(
        name="hqcnn",
        circuit=circuit,
        input_params=tuple(inputs),
        weight_params=weights,
        observables=observables,
        output_names=names,
        init_weights=init_weights,
        description=(
            f"HQCNN VQC: {encoding} encoding, {layers} entangling layer(s), "
            f"{'Fourier attention, ' if attention else ''}final rotations, "
            f"outputs {', '.join(names)}"
        ),
    )
