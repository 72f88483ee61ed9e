"""The quanvolution family: patch encodings, quanvolutional filters and QCNN blocks.

Two templates are built from the blocks below:

* ``quanv_template`` — the circuit a :class:`~qhqcnn.nn.quanv2d.Quanv2d` layer runs on every image
  patch (Henderson et al. 2019, "Quanvolutional neural networks")::

      patch (k×k values) ─ encoding (angle: k² qubits │ amplitude: log2 k² qubits)
                         ─ filter (random fixed rotations + CNOTs │ trainable n_local layers)
                         ─ ⟨Z_i⟩ on every qubit  (one output channel per qubit)

* ``qcnn_template`` — a quantum convolutional neural network (Cong et al. 2019)::

      encoding (n qubits) ─ conv: shared 2-qubit U on even then odd neighbour pairs
                          ─ pool: controlled-U from each odd (discarded) qubit onto the even one
                          ─ dense: [U3 + CNOT ring] × L + RY RZ on the n/2 kept qubits
                          ─ ⟨Z⟩, ⟨X⟩ on the kept qubits

Every template takes *angles* as inputs; the classical half of each encoding maps values to
those angles in torch (:mod:`qhqcnn.circuits.encodings`), so
it is batched and differentiable and the circuit itself stays a plain parameterized circuit
(exportable, transpilable, runnable on every backend).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from qiskit import QuantumCircuit
from qiskit.circuit import ParameterVector
from qiskit.circuit.library import CUGate, CXGate, RXGate, RYGate, RZGate, n_local
from qiskit.quantum_info import SparsePauliOp

from qhqcnn.circuits.encodings import get_encoding
from qhqcnn.circuits.hqcnn import entangling_layers, rotation_layer
from qhqcnn.circuits.template import CircuitTemplate, single_qubit_observables
from qhqcnn.errors import ConfigError

FILTERS = ("random", "trainable")


# -- quanvolutional filters ------------------------------------------------------------------
def random_filter(num_qubits: int, layers: int = 2, *, seed: int = 0) -> QuantumCircuit:
    """A fixed random filter (Henderson et al. 2019): no trainable weights.

    Each of ``layers`` layers draws, from ``numpy.random.default_rng(seed)``, one rotation per
    qubit (axis uniform in {X, Y, Z}, angle uniform in [0, 2π)), then a CNOT chain along a random
    permutation of the qubits (p0→p1→…→p_{n−1})::

        q_0: ─ Rx(2.61) ──■──────────   (one layer; axes, angles and the chain
        q_1: ─ Rz(0.47) ──┼────X─────    order all come from the seeded RNG)
        q_2: ─ Ry(5.02) ──X────■─────
    """
    if layers < 1:
        raise ConfigError(f"a random filter needs >= 1 layer, got {layers}")
    rng = np.random.default_rng(seed)
    gates = (RXGate, RYGate, RZGate)
    circuit = QuantumCircuit(num_qubits, name="random_filter")
    for _ in range(layers):
        for qubit in range(num_qubits):
            gate = gates[int(rng.integers(3))]
            circuit.append(gate(float(rng.uniform(0, 2 * np.pi))), [qubit])
        order = [int(q) for q in rng.permutation(num_qubits)]
        for control, target in zip(order, order[1:], strict=False):
            circuit.append(CXGate(), [control, target])
    return circuit


def trainable_filter(num_qubits: int, layers: int = 2, *, prefix: str = "theta") -> QuantumCircuit:
    """A trainable filter: ``entangling_layers`` = ``layers`` × [U3(θ) on all, CNOT ring]."""
    if layers < 1:
        raise ConfigError(f"a trainable filter needs >= 1 layer, got {layers}")
    return entangling_layers(num_qubits, layers, prefix=prefix)


# -- QCNN blocks -------------------------------------------------------------------------------
def two_qubit_unitary(prefix: str = "conv") -> QuantumCircuit:
    """The convolution kernel: U3 ⊗ U3, CNOT, U3 ⊗ U3 (Qiskit ``n_local``, 12 weights)::

        ┤ U(c0,c1,c2) ├──■──┤ U(c6,c7,c8)   ├
        ┤ U(c3,c4,c5) ├┤ X ├┤ U(c9,c10,c11) ├

    Any two-qubit product rotation plus one CNOT: enough to entangle neighbours trainably.
    """
    return n_local(
        2, rotation_blocks="u", entanglement_blocks="cx", reps=1, parameter_prefix=prefix
    )


def brickwork_pairs(num_qubits: int) -> list[tuple[int, int]]:
    """Neighbour pairs (0,1), (2,3), … then (1,2), (3,4), …, (n−1, 0) (ring, n even)."""
    even = [(q, q + 1) for q in range(0, num_qubits - 1, 2)]
    odd = [(q, (q + 1) % num_qubits) for q in range(1, num_qubits, 2)] if num_qubits > 2 else []
    return even + odd


def qcnn_conv(num_qubits: int, *, prefix: str = "conv") -> tuple[QuantumCircuit, list]:
    """Quantum convolution: one trainable 2-qubit unitary applied to every neighbour pair.

    The kernel's 12 weights are shared by all pairs (translation invariance, as in Cong et
    al.); pairs in brickwork order, e.g. for 4 qubits::

        q_0: ┤0   ├──────┤1   ├
        q_1: ┤1 U ├┤0   ├┤    ├
        q_2: ┤0   ├┤1 U ├┤  U ├
        q_3: ┤1 U ├──────┤0   ├
    """
    if num_qubits < 2 or num_qubits % 2:
        raise ConfigError(f"the QCNN needs an even number >= 2 of qubits, got {num_qubits}")
    kernel = two_qubit_unitary(prefix)
    circuit = QuantumCircuit(num_qubits, name="conv")
    for pair in brickwork_pairs(num_qubits):
        circuit.compose(kernel, qubits=list(pair), inplace=True)
    return circuit, list(kernel.parameters)


def qcnn_pool(num_qubits: int, *, prefix: str = "pool") -> tuple[QuantumCircuit, list, list[int]]:
    """Quantum pooling: a controlled-U3(θ, φ, λ) from each odd qubit onto the even one below.

    Measuring the control and conditioning a rotation on the outcome (Cong et al.) equals, by
    deferred measurement, this controlled gate; the odd qubits are then discarded (never used or
    measured again), halving the register. A control in |0⟩ leaves its kept qubit unchanged.
    The 3 weights are shared by all pairs. Returns ``(circuit, weights, kept qubits)``::

        q_0 (kept):    ───┤ U3(p0,p1,p2) ├───
                          └──────┬───────┘
        q_1 (discard): ──────────■───────────
    """
    if num_qubits < 2 or num_qubits % 2:
        raise ConfigError(f"pooling needs an even number >= 2 of qubits, got {num_qubits}")
    weights = ParameterVector(prefix, 3)
    circuit = QuantumCircuit(num_qubits, name="pool")
    for kept in range(0, num_qubits, 2):
        circuit.append(CUGate(weights[0], weights[1], weights[2], 0.0), [kept + 1, kept])
    return circuit, list(weights), list(range(0, num_qubits, 2))


def qcnn_dense(num_qubits: int, layers: int, *, prefix: str = "fc") -> tuple[QuantumCircuit, list]:
    """Quantum fully-connected block: ``entangling_layers`` then ``rotation_layer`` (RY RZ)::

        [U3(θ) on all, CNOT ring] × L ─ RY(ρ) RZ(ρ') on all

    3·n·L + 2·n weights; every kept qubit interacts with every other through the ring.
    """
    circuit = QuantumCircuit(num_qubits, name="dense")
    entangler = entangling_layers(num_qubits, layers, prefix=prefix)
    rotations, rho = rotation_layer(num_qubits, prefix=f"{prefix}_rho")
    circuit.compose(entangler, inplace=True)
    circuit.compose(rotations, inplace=True)
    return circuit, list(entangler.parameters) + list(rho)


def kept_qubit_observables(
    num_qubits: int, kept: Sequence[int], paulis: Sequence[str] = ("Z", "X")
) -> tuple[tuple[SparsePauliOp, ...], tuple[str, ...]]:
    """``single_qubit_observables`` restricted to the ``kept`` qubits (same P-major order)."""
    observables, names = single_qubit_observables(num_qubits, paulis)
    chosen = [(o, n) for o, n in zip(observables, names, strict=True) if int(n[1:]) in kept]
    return tuple(o for o, _ in chosen), tuple(n for _, n in chosen)


# -- templates ---------------------------------------------------------------------------------
def patch_qubits(window: int, encoding: str) -> int:
    """Qubits needed for a ``window``×``window`` patch under ``encoding`` (k² for angle, log2 k²
    for amplitude)."""
    if window < 1:
        raise ConfigError(f"the window must be >= 1, got {window}")
    return get_encoding(encoding).qubits(window * window)


def _uniform_init(count: int, scale: float) -> Callable[[np.random.Generator], np.ndarray]:
    def init_weights(rng: np.random.Generator) -> np.ndarray:
        return rng.uniform(-scale, scale, count)

    return init_weights


def quanv_template(
    window: int = 2,
    *,
    encoding: str = "angle",
    filter_kind: str = "random",
    layers: int = 2,
    seed: int = 0,
) -> CircuitTemplate:
    """The quanvolutional filter circuit for one ``window``×``window`` patch.

    encoding (angle: RY(π·x) per pixel │ amplitude: RY tree of the L2-normalised patch) →
    filter (``random``: :func:`random_filter` with ``seed``, no weights │ ``trainable``:
    :func:`trainable_filter`, 3·n·layers weights) → ⟨Z_i⟩ on every qubit (the output channels).
    """
    if filter_kind not in FILTERS:
        raise ConfigError(
            f"unknown quanv filter {filter_kind!r}; choose one of {', '.join(FILTERS)}"
        )
    num_qubits = patch_qubits(window, encoding)
    encoder, inputs = get_encoding(encoding).circuit(window * window)
    if filter_kind == "random":
        body = random_filter(num_qubits, layers, seed=seed)
    else:
        body = trainable_filter(num_qubits, layers)
    circuit = QuantumCircuit(num_qubits, name="quanv")
    circuit.compose(encoder, inplace=True)
    circuit.barrier()
    circuit.compose(body, inplace=True)
    weights = tuple(body.parameters)
    observables, names = single_qubit_observables(num_qubits, ("Z",))
    described = f"random (seed {seed})" if filter_kind == "random" else "trainable"
    return CircuitTemplate(
        name="quanv",
        circuit=circuit,
        input_params=tuple(inputs),
        weight_params=weights,
        observables=observables,
        output_names=names,
        init_weights=_uniform_init(len(weights), np.pi / 4),
        description=(
            f"quanvolution filter: {window}x{window} patch, {encoding} encoding, "
            f"{described} filter with {layers} layer(s), outputs {', '.join(names)}"
        ),
    )


def qcnn_template(
    num_qubits: int = 4, layers: int = 2, *, encoding: str = "amplitude"
) -> CircuitTemplate:
    """The QCNN: encoding → :func:`qcnn_conv` → :func:`qcnn_pool` → :func:`qcnn_dense`.

    Inputs: 2^n − 1 amplitude-tree angles of 2^n values, or n angles (angle encoding).
    Weights: 12 (conv) + 3 (pool) + 3·(n/2)·layers + 2·(n/2) (dense); 31 for n=4, layers=2.
    Outputs: ⟨Z⟩ then ⟨X⟩ of the n/2 kept (even) qubits.
    """
    chosen = get_encoding(encoding)
    if layers < 0:
        raise ConfigError(f"layers must be >= 0, got {layers}")
    # amplitude: 2^n values on n qubits; one-per-qubit encodings: n values
    encoder, inputs = chosen.circuit(num_qubits if chosen.one_per_qubit else 1 << num_qubits)
    conv, conv_weights = qcnn_conv(num_qubits)
    pool, pool_weights, kept = qcnn_pool(num_qubits)
    dense, dense_weights = qcnn_dense(len(kept), layers)
    circuit = QuantumCircuit(num_qubits, name="qcnn")
    for block, qubits in ((encoder, None), (conv, None), (pool, None), (dense, kept)):
        if circuit.data:
            circuit.barrier()
        circuit.compose(block, qubits=qubits, inplace=True)
    weights = tuple(conv_weights + pool_weights + dense_weights)
    observables, names = kept_qubit_observables(num_qubits, kept)
    n_dense = len(dense_weights) - 2 * len(kept)

    def init_weights(rng: np.random.Generator) -> np.ndarray:
        return np.concatenate(
            [
                rng.uniform(-np.pi / 4, np.pi / 4, len(conv_weights) + 3 + n_dense),
                rng.uniform(-np.pi / 8, np.pi / 8, 2 * len(kept)),
            ]
        )

    return CircuitTemplate(
        name="qcnn",
        circuit=circuit,
        input_params=tuple(inputs),
        weight_params=weights,
        observables=observables,
        output_names=names,
        init_weights=init_weights,
        description=(
            f"QCNN: {encoding} encoding on {num_qubits} qubits, shared-kernel conv, "
            f"controlled-U3 pooling to qubits {kept}, dense block with {layers} layer(s), "
            f"outputs {', '.join(names)}"
        ),
    )


def quanv_trainable_template() -> CircuitTemplate:
    """The default trainable quanvolution filter (export registry entry)."""
    return quanv_template(filter_kind="trainable")


def quanv_amplitude_template() -> CircuitTemplate:
    """A 4×4 patch amplitude-encoded on 4 qubits with the random filter (export registry)."""
    return quanv_template(4, encoding="amplitude")


def qcnn_angle_template() -> CircuitTemplate:
    """The QCNN with angle encoding (``--model qcnn --encoding angle``; export registry)."""
    return qcnn_template(encoding="angle")
