"""The fast exact engine against Qiskit's references (StatevectorEstimator, parameter shift).

Values must equal ``StatevectorEstimator`` and gradients qiskit-machine-learning's
``ParamShiftEstimatorGradient`` to 1e-10 (float64). qml's parameter shift needs ~20 s per row on
U3-heavy circuits (Qiskit rebinds a long symbolic global phase for every shifted circuit), so the
full 3-layer template is checked against the *exact* two-term shift rule evaluated with
``StatevectorEstimator`` (exact there: every parameter enters one gate whose generator has two
eigenvalues one apart), and qml's own parameter shift runs on smaller circuits.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter, ParameterVector
from qiskit.circuit.library import (
    CU3Gate,
    MCPhaseGate,
    PauliEvolutionGate,
    QFTGate,
    U2Gate,
    UnitaryGate,
    XXMinusYYGate,
    XXPlusYYGate,
)
from qiskit.circuit.random import random_circuit
from qiskit.primitives import StatevectorEstimator
from qiskit.quantum_info import SparseObservable, SparsePauliOp, Statevector, random_unitary
from qiskit_machine_learning.connectors import TorchConnector
from qiskit_machine_learning.gradients import ParamShiftEstimatorGradient
from qiskit_machine_learning.gradients.utils import DerivativeType
from qiskit_machine_learning.neural_networks import EstimatorQNN

from qhqcnn.engine import (
    ExactTorchLayer,
    FastEstimator,
    FastEstimatorGradient,
    StatevectorSimulator,
    compile_circuit,
    pauli_sum,
)
from qhqcnn.engine import small as engine_small
from qhqcnn.engine import tensors as engine_tensors

TOL = 1e-10
#: Engine configurations: default (few qubits: dense layout on the segment path), the dense
#: layout's block path, and the many-qubit local layout.
LAYOUTS = {
    "dense": {},
    "dense-blocks": {"small_max_qubits": 0},
    "local": {"dense_max_qubits": 0},
}


# ----------------------------------------------------------------------------- circuits
def hqcnn_template(num_qubits: int = 4, layers: int = 3):
    """RY(x) encoding, [U3 on every qubit + CX ring] x layers, H/CP ladder, CCX, RY/RZ."""
    x = ParameterVector("x", num_qubits)
    w = ParameterVector("w", 3 * layers * num_qubits + (num_qubits - 1) + 2 * num_qubits)
    qc = QuantumCircuit(num_qubits)
    k = 0
    for i in range(num_qubits):
        qc.ry(x[i], i)
    for _ in range(layers):
        for i in range(num_qubits):
            qc.u(w[k], w[k + 1], w[k + 2], i)
            k += 3
        for i in range(num_qubits):
            qc.cx(i, (i + 1) % num_qubits)
    for i in range(num_qubits - 1):
        qc.h(i)
        qc.cp(w[k], i, i + 1)
        k += 1
    qc.ccx(0, 1, 2)
    qc.ccx(num_qubits - 3, num_qubits - 2, num_qubits - 1)
    for i in range(num_qubits):
        qc.ry(w[k], i)
        qc.rz(w[k + 1], i)
        k += 2
    return qc, list(x), list(w)


def z_and_x(num_qubits: int) -> list[SparsePauliOp]:
    return [
        SparsePauliOp.from_sparse_list([(p, [i], 1.0)], num_qubits)
        for p in "ZX"
        for i in range(num_qubits)
    ]


def parameterized_random_circuit(num_qubits: int, depth: int, seed: int) -> QuantumCircuit:
    """``random_circuit`` with every numeric gate angle replaced by a fresh parameter (plus a
    final parameterized RY so that there is at least one parameter)."""
    base = random_circuit(num_qubits, depth, max_operands=3, seed=seed)
    out = QuantumCircuit(num_qubits)
    count = 0
    for instruction in base.data:
        op = instruction.operation.to_mutable()
        if op.params and all(isinstance(p, float) for p in op.params):
            op.params = [Parameter(f"t{count + j:03d}") for j in range(len(op.params))]
            count += len(op.params)
        out.append(op, instruction.qubits)
    out.ry(Parameter("t_end"), 0)
    return out


def expression_circuit() -> QuantumCircuit:
    """Affine (2a, a+b, b-1.3) and non-affine (sin a, a*b) angle expressions, U-family gates."""
    a, b, c = Parameter("a"), Parameter("b"), Parameter("c")
    qc = QuantumCircuit(3)
    qc.h(range(3))
    qc.rx(2 * a, 0)
    qc.ry(a + b, 1)
    qc.rz(b - 1.3, 2)
    qc.cx(0, 1)
    qc.rzz(a * b, 1, 2)
    qc.ry(c.sin(), 0)
    qc.crx(c - a, 2, 0)
    qc.append(U2Gate(a, 0.4), [1])
    qc.r(c, b, 2)
    qc.append(CU3Gate(b, c, 0.3, ctrl_state=0), [0, 2])
    qc.cu(a, b, c, 0.7, 1, 0)
    qc.append(XXPlusYYGate(c, a), [0, 1])
    qc.global_phase = a + 0.2
    return qc


def share_weights(circuit: QuantumCircuit, values: np.ndarray) -> None:
    """Give every row the same values for all parameters except the inputs ``x[...]``."""
    shared = [i for i, p in enumerate(circuit.parameters) if not p.name.startswith("x")]
    values[:, shared] = values[0, shared]


def reference_values(circuit, observables, values) -> np.ndarray:
    job = StatevectorEstimator().run([(circuit, observables, values)])
    return job.result()[0].data.evs


def shift_rule_gradient(circuit, observables, values: np.ndarray) -> np.ndarray:
    """Exact two-term shift rule via StatevectorEstimator: ``(rows, observables, params)``."""
    rows, width = values.shape
    shifts = np.concatenate([np.eye(width), -np.eye(width)]) * (np.pi / 2)
    shifted = values[:, None, :] + shifts[None]  # (rows, 2P, P)
    obs = np.empty((len(observables), 1, 1), dtype=object)
    for k, observable in enumerate(observables):
        obs[k, 0, 0] = observable
    evs = reference_values(circuit, obs, shifted)  # (K, rows, 2P)
    grads = (evs[..., :width] - evs[..., width:]) / 2
    return np.moveaxis(grads, 0, 1)


def qnn_style_gradients(gradient, qc, obs, values):
    """Gradients requested like ``EstimatorQNN`` does (rows tiled per observable), reshaped to
    ``(rows, observables, parameters)``, and the result metadata."""
    rows = len(values)
    result = gradient.run(
        [qc] * (rows * len(obs)),
        [o for o in obs for _ in range(rows)],
        np.tile(values, (len(obs), 1)),
    ).result()
    grads = np.asarray(result.gradients).reshape(len(obs), rows, -1).transpose(1, 0, 2)
    return grads, result.metadata


@cache
def hqcnn_case():
    """The full template, two rows, its 8 observables and the exact shift-rule gradients."""
    qc, _, _ = hqcnn_template()
    obs = z_and_x(4)
    values = np.random.default_rng(10).uniform(-np.pi, np.pi, (2, qc.num_parameters))
    share_weights(qc, values)
    return qc, obs, values, shift_rule_gradient(qc, obs, values)


# ----------------------------------------------------------------------------- compile + states
@pytest.mark.parametrize("layout", LAYOUTS)
def test_statevectors_match_qiskit_little_endian(layout):
    qc = expression_circuit()
    program = compile_circuit(qc)
    rows = np.random.default_rng(1).uniform(-2, 2, (3, qc.num_parameters))
    states = StatevectorSimulator(**LAYOUTS[layout]).states(program, rows).numpy()
    for row, state in zip(rows, states, strict=True):
        expected = Statevector(qc.assign_parameters(row)).data
        np.testing.assert_allclose(state, expected, atol=TOL)


def test_compile_cache_reuses_and_detects_edits():
    qc, _, _ = hqcnn_template(3, 1)
    program = compile_circuit(qc)
    assert compile_circuit(qc) is program
    qc.rx(Parameter("z_new"), 0)
    edited = compile_circuit(qc)
    assert edited is not program and edited.num_parameters == program.num_parameters + 1


def test_affine_and_nonlinear_angles_are_classified():
    program = compile_circuit(expression_circuit())
    assert len(program.angle_map.nonlinear) >= 2  # sin(c) and a*b (XXPlusYY may add more)
    assert program.global_phase_slot is not None


def test_non_unitary_instructions_are_rejected():
    qc = QuantumCircuit(2, 1)
    qc.h(0)
    qc.measure(0, 0)
    with pytest.raises(ValueError, match="unitary"):
        FastEstimator().run([(qc, "ZI")]).result()
    qc = QuantumCircuit(1)
    qc.reset(0)
    with pytest.raises(ValueError, match="reset"):
        compile_circuit(qc, cache=False)


def test_barriers_are_ignored_and_unparameterized_circuits_work():
    qc = QuantumCircuit(2)
    qc.h(0)
    qc.barrier()
    qc.cx(0, 1)
    result = FastEstimator().run([(qc, ["ZZ", "XX", "ZI"])]).result()[0]
    np.testing.assert_allclose(result.data.evs, [1.0, 1.0, 0.0], atol=TOL)


# ----------------------------------------------------------------------------- estimator values
@pytest.mark.parametrize("layout", LAYOUTS)
def test_hqcnn_values_match_statevector_estimator(layout):
    qc, _, _ = hqcnn_template()
    obs = z_and_x(4)
    values = np.random.default_rng(2).uniform(-np.pi, np.pi, (5, qc.num_parameters))
    share_weights(qc, values)  # per-row inputs, shared weights: the QNN pattern
    fast = FastEstimator(**LAYOUTS[layout])
    pubs = [(qc, o, values) for o in obs]
    ours = np.stack([r.data.evs for r in fast.run(pubs).result()])
    ref = np.stack([r.data.evs for r in StatevectorEstimator().run(pubs).result()])
    np.testing.assert_allclose(ours, ref, atol=TOL)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("seed", [3, 11, 23])
def test_random_circuit_values_match(layout, seed):
    qc = parameterized_random_circuit(4, 5, seed)
    rng = np.random.default_rng(seed)
    values = rng.uniform(-3, 3, (4, qc.num_parameters))
    obs = [SparsePauliOp(["XYZI", "ZZII", "IIYX"], [0.3, -1.1, 0.7]), "YIIX", "IIIZ"]
    ours = FastEstimator(**LAYOUTS[layout]).run([(qc, [obs], values[:, None])]).result()[0]
    ref = StatevectorEstimator().run([(qc, [obs], values[:, None])]).result()[0]
    assert ours.data.evs.shape == ref.data.evs.shape == (4, 3)
    np.testing.assert_allclose(ours.data.evs, ref.data.evs, atol=TOL)


def test_broadcasting_shapes_and_pub_metadata():
    qc = expression_circuit()
    values = np.random.default_rng(4).uniform(-1, 1, (3, 1, qc.num_parameters))
    obs = [SparsePauliOp(["XXY", "ZIZ"], [1.0 + 0j, -0.5 + 0j]), "YZX"]
    qc.metadata = {"name": "expr"}
    ours = FastEstimator().run([(qc, obs, values)]).result()
    ref = StatevectorEstimator().run([(qc, obs, values)]).result()
    assert ours[0].data.evs.shape == ref[0].data.evs.shape == (3, 2)
    assert ours[0].data.stds.shape == (3, 2) and not ours[0].data.stds.any()
    np.testing.assert_allclose(ours[0].data.evs, ref[0].data.evs, atol=TOL)
    assert ours[0].metadata == ref[0].metadata
    assert ours.metadata == ref.metadata


def test_pubs_with_mixed_circuits_values_and_observable_arrays():
    qc_a = expression_circuit()
    qc_b, _, _ = hqcnn_template(3, 1)
    rng = np.random.default_rng(5)
    va = rng.uniform(-1, 1, (2, qc_a.num_parameters))
    vb = rng.uniform(-1, 1, qc_b.num_parameters)
    pubs = [
        (qc_a, ["ZZZ", "XIY"], va[:, None]),
        (qc_b, [["ZII"], ["IXI"]], vb),
        (qc_a, "YYX", va),
        (qc_a, SparsePauliOp("ZXZ"), va + 0.5),
    ]
    ours = FastEstimator().run(pubs).result()
    ref = StatevectorEstimator().run(pubs).result()
    for mine, theirs in zip(ours, ref, strict=True):
        assert mine.data.evs.shape == theirs.data.evs.shape
        np.testing.assert_allclose(mine.data.evs, theirs.data.evs, atol=TOL)


def test_many_small_pubs_are_batched_and_match():
    qc = expression_circuit()
    rng = np.random.default_rng(22)
    pubs = [(qc, ["ZZX", "IYI"][k % 2], rng.uniform(-1, 1, qc.num_parameters)) for k in range(60)]
    ours = [r.data.evs for r in FastEstimator().run(pubs).result()]
    ref = [r.data.evs for r in StatevectorEstimator().run(pubs).result()]
    np.testing.assert_allclose(ours, ref, atol=TOL)


def test_qml_param_shift_on_fast_estimator_matches_reference():
    qc = expression_circuit()
    values = np.random.default_rng(23).uniform(-1, 1, (2, qc.num_parameters))
    obs = [SparsePauliOp("XZY"), SparsePauliOp("ZZI")]
    ours = ParamShiftEstimatorGradient(FastEstimator()).run([qc, qc], obs, values).result()
    ref = ParamShiftEstimatorGradient(StatevectorEstimator()).run([qc, qc], obs, values).result()
    np.testing.assert_allclose(ours.gradients, ref.gradients, atol=TOL)


def test_parameters_given_by_name_mapping():
    qc = expression_circuit()
    names = [p.name for p in qc.parameters]
    values = np.random.default_rng(6).uniform(-1, 1, (2, len(names)))
    mapping = {tuple(reversed(names)): values[:, ::-1]}
    ours = FastEstimator().run([(qc, "ZXY", mapping)]).result()[0].data.evs
    ref = reference_values(qc, "ZXY", values)
    np.testing.assert_allclose(ours, ref, atol=TOL)


def test_projector_observables_are_supported():
    qc = expression_circuit()
    values = np.random.default_rng(7).uniform(-1, 1, qc.num_parameters)
    obs = SparseObservable.from_label("0+r")
    ours = FastEstimator().run([(qc, obs, values)]).result()[0].data.evs
    state = Statevector(qc.assign_parameters(values))
    expected = state.expectation_value(SparsePauliOp.from_sparse_observable(obs)).real
    np.testing.assert_allclose(ours, expected, atol=TOL)


def test_non_hermitian_observable_is_rejected_like_qiskit():
    qc = QuantumCircuit(1)
    with pytest.raises(ValueError, match="Hermitian"):
        FastEstimator().run([(qc, SparsePauliOp(["X"], [1j]))])


def test_precision_noise_matches_statevector_estimator_with_seed():
    qc = expression_circuit()
    values = np.random.default_rng(8).uniform(-1, 1, (4, qc.num_parameters))
    pubs = [(qc, ["ZZZ", "XYI"], values[:, None])]
    ours = FastEstimator(seed=42).run(pubs, precision=0.05).result()[0]
    ref = StatevectorEstimator(seed=42).run(pubs, precision=0.05).result()[0]
    np.testing.assert_allclose(ours.data.evs, ref.data.evs, atol=TOL)
    assert ours.metadata["target_precision"] == 0.05


def test_complex64_is_close():
    qc, _, _ = hqcnn_template()
    values = np.random.default_rng(9).uniform(-1, 1, (3, qc.num_parameters))
    ours = FastEstimator(dtype="complex64").run([(qc, "ZIXI", values)]).result()[0]
    np.testing.assert_allclose(ours.data.evs, reference_values(qc, "ZIXI", values), atol=1e-5)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    num_qubits=st.integers(1, 4),
    depth=st.integers(1, 6),
    seed=st.integers(0, 10_000),
    rows=st.integers(1, 3),
)
def test_random_circuits_property(num_qubits, depth, seed, rows):
    qc = parameterized_random_circuit(num_qubits, depth, seed)
    values = np.random.default_rng(seed).uniform(-4, 4, (rows, qc.num_parameters))
    label = "".join("XYZ"[(seed + i) % 3] for i in range(num_qubits))
    ours = FastEstimator().run([(qc, label, values)]).result()[0].data.evs
    np.testing.assert_allclose(ours, reference_values(qc, label, values), atol=TOL)


# ----------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("layout", LAYOUTS)
def test_hqcnn_gradients_match_exact_shift_rule(layout):
    qc, obs, values, reference = hqcnn_case()
    gradient = FastEstimatorGradient(FastEstimator(**LAYOUTS[layout]))
    ours, metadata = qnn_style_gradients(gradient, qc, obs, values)
    np.testing.assert_allclose(ours, reference, atol=TOL)
    assert metadata[0]["parameters"] == qc.parameters


def composite_circuit() -> QuantumCircuit:
    """A parameterized sub-circuit instruction, QFT, a unitary, XX-YY and multi-controlled phase."""
    a, b, t = Parameter("a"), Parameter("b"), Parameter("t")
    sub = QuantumCircuit(2, name="sub")
    sub.ry(a, 0)
    sub.cx(0, 1)
    sub.rz(2 * b, 1)
    qc = QuantumCircuit(3)
    qc.h(range(3))
    qc.append(sub.to_instruction(), [0, 2])
    qc.append(QFTGate(3), [0, 1, 2])
    qc.rx(t, 1)
    qc.append(UnitaryGate(random_unitary(4, seed=1)), [1, 2])
    qc.append(XXMinusYYGate(a, b), [0, 1])
    qc.append(MCPhaseGate(t, 2), [0, 1, 2])
    return qc


def test_composite_gates_match_param_shift():
    qc = composite_circuit()
    values = np.random.default_rng(24).uniform(-1, 1, (2, 3))
    obs = SparsePauliOp(["XYZ", "ZZI"], [1.0, 0.5])
    np.testing.assert_allclose(
        FastEstimator().run([(qc, obs, values)]).result()[0].data.evs,
        reference_values(qc, obs, values),
        atol=TOL,
    )
    ours = FastEstimatorGradient().run([qc, qc], [obs, obs], values).result()
    ref = ParamShiftEstimatorGradient(StatevectorEstimator()).run([qc, qc], [obs, obs], values)
    np.testing.assert_allclose(ours.gradients, ref.result().gradients, atol=TOL)


def test_pauli_evolution_is_exact_like_statevector():
    # Statevector uses the exact exp(-i t H) of a PauliEvolutionGate (non-commuting terms here);
    # qml's parameter shift differentiates its Trotter definition instead, so compare with finite
    # differences of StatevectorEstimator.
    t = Parameter("t")
    qc = QuantumCircuit(3)
    qc.h(range(3))
    qc.append(PauliEvolutionGate(SparsePauliOp(["XXI", "IZZ"], [0.5, 0.3]), time=t), [0, 1, 2])
    obs = SparsePauliOp(["XYZ", "ZZI"], [1.0, 0.5])
    values = np.array([[0.7], [-1.2]])
    ours = FastEstimator().run([(qc, obs, values)]).result()[0].data.evs
    np.testing.assert_allclose(ours, reference_values(qc, obs, values), atol=TOL)
    eps = 1e-6
    fd = (reference_values(qc, obs, values + eps) - reference_values(qc, obs, values - eps)) / 2
    grads = FastEstimatorGradient().run([qc, qc], [obs, obs], values).result().gradients
    np.testing.assert_allclose(np.ravel(grads), fd / eps, atol=1e-7)


def test_hqcnn_gradient_matches_qml_param_shift():
    qc, _, _ = hqcnn_template(4, layers=1)
    obs = SparsePauliOp(["ZIIX", "IYII"], [0.5, -1.0])
    values = np.random.default_rng(12).uniform(-np.pi, np.pi, (1, qc.num_parameters))
    ours = FastEstimatorGradient().run([qc], [obs], values).result()
    ref = ParamShiftEstimatorGradient(StatevectorEstimator()).run([qc], [obs], values).result()
    np.testing.assert_allclose(ours.gradients[0], ref.gradients[0], atol=TOL)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_expression_gradients_and_subsets_match_param_shift(layout):
    qc = expression_circuit()
    params = list(qc.parameters)
    rng = np.random.default_rng(13)
    values = rng.uniform(-1, 1, (3, len(params)))
    obs = [SparsePauliOp(["XZY", "ZZI"], [0.4, 1.0]), SparsePauliOp("IYX")]
    circuits = [qc] * 3
    observables = [obs[0], obs[1], obs[0]]
    subsets = [None, [params[2], params[0]], [params[1]]]
    gradient = FastEstimatorGradient(FastEstimator(**LAYOUTS[layout]))
    ours = gradient.run(circuits, observables, values, parameters=subsets).result()
    ref = ParamShiftEstimatorGradient(StatevectorEstimator())
    ref = ref.run(circuits, observables, values, parameters=subsets).result()
    for mine, theirs, meta, subset in zip(
        ours.gradients, ref.gradients, ours.metadata, subsets, strict=True
    ):
        assert mine.shape == theirs.shape
        np.testing.assert_allclose(mine, theirs, atol=TOL)
        assert list(meta["parameters"]) == list(subset or params)


def test_gradients_for_several_circuits_in_one_call():
    qc_a = parameterized_random_circuit(3, 3, seed=31)
    qc_b = expression_circuit()
    rng = np.random.default_rng(14)
    va, vb = rng.uniform(-2, 2, qc_a.num_parameters), rng.uniform(-2, 2, qc_b.num_parameters)
    circuits = [qc_a, qc_b, qc_a, qc_b]
    observables = [SparsePauliOp("ZXI"), SparsePauliOp("YYZ"), SparsePauliOp("IIX"), "XZZ"]
    observables[3] = SparsePauliOp(observables[3])
    values = [va, vb, va + 0.3, vb]
    ours = FastEstimatorGradient().run(circuits, observables, values).result()
    ref = ParamShiftEstimatorGradient(StatevectorEstimator())
    ref = ref.run(circuits, observables, values).result()
    for mine, theirs in zip(ours.gradients, ref.gradients, strict=True):
        np.testing.assert_allclose(mine, theirs, atol=TOL)


@pytest.mark.parametrize("seed", [5, 17])
def test_random_circuit_gradients_match_param_shift(seed):
    qc = parameterized_random_circuit(3, 3, seed)
    values = np.random.default_rng(seed).uniform(-2, 2, (2, qc.num_parameters))
    obs = SparsePauliOp(["XYZ", "ZIZ"], [1.0, 0.5])
    ours = FastEstimatorGradient().run([qc, qc], [obs, obs], values).result()
    ref = ParamShiftEstimatorGradient(StatevectorEstimator()).run([qc, qc], [obs, obs], values)
    for mine, theirs in zip(ours.gradients, ref.result().gradients, strict=True):
        np.testing.assert_allclose(mine, theirs, atol=TOL)


def test_per_row_local_gates_in_dense_layout(monkeypatch):
    monkeypatch.setattr(engine_tensors, "PER_ROW_FULL_BYTES", 0)
    qc, _, _ = hqcnn_template(3, 2)
    obs = z_and_x(3)
    values = np.random.default_rng(15).uniform(-2, 2, (3, qc.num_parameters))
    share_weights(qc, values)
    ours, _ = qnn_style_gradients(FastEstimatorGradient(), qc, obs, values)
    np.testing.assert_allclose(ours, shift_rule_gradient(qc, obs, values), atol=TOL)


def wide_rotation_circuit(num_qubits: int = 7) -> QuantumCircuit:
    """Pauli rotations (exact two-term shift rule) and constant gates on near and far qubits, to
    exercise every way the local layout applies a gate (low block, span, permuted axes)."""
    x = ParameterVector("x", num_qubits)
    w = ParameterVector("w", 4 * num_qubits)
    qc = QuantumCircuit(num_qubits)
    for i in range(num_qubits):
        qc.ry(x[i], i)
    for i in range(num_qubits):
        qc.rx(w[i], i)
    qc.cx(0, num_qubits - 1)
    qc.rzz(w[num_qubits], 0, num_qubits - 1)
    qc.ryy(w[num_qubits + 1], num_qubits - 2, num_qubits - 1)
    qc.rxx(w[num_qubits + 2], 2, 5)
    qc.ccx(0, 3, num_qubits - 1)
    qc.h(num_qubits - 1)
    qc.swap(1, num_qubits - 2)
    for i in range(num_qubits):
        qc.rz(w[2 * num_qubits + i], i)
        qc.ry(w[3 * num_qubits + i], (i + 3) % num_qubits)
    qc.cz(4, 5)
    return qc


@pytest.mark.parametrize("layout", LAYOUTS)
def test_wide_circuit_values_and_gradients(layout):
    qc, obs, values, ref_values, ref_grads = wide_case()
    fast = FastEstimator(**LAYOUTS[layout])
    ours = np.stack([r.data.evs for r in fast.run([(qc, o, values) for o in obs]).result()])
    np.testing.assert_allclose(ours, ref_values, atol=TOL)
    grads, _ = qnn_style_gradients(FastEstimatorGradient(fast), qc, obs, values)
    np.testing.assert_allclose(grads, ref_grads, atol=TOL)


@cache
def wide_case():
    qc = wide_rotation_circuit()
    obs = [SparsePauliOp.from_sparse_list([("Z", [i], 1.0)], 7) for i in (0, 3, 6)]
    obs.append(SparsePauliOp.from_sparse_list([("XY", [1, 5], 0.5), ("ZZ", [0, 6], 1.0)], 7))
    values = np.random.default_rng(21).uniform(-np.pi, np.pi, (3, qc.num_parameters))
    share_weights(qc, values)
    ref_values = np.stack([reference_values(qc, o, values) for o in obs])
    return qc, obs, values, ref_values, shift_rule_gradient(qc, obs, values)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_row_chunking_gives_the_same_results(layout):
    qc, _, _ = hqcnn_template(3, 2)
    program = compile_circuit(qc)
    observables = [pauli_sum(o) for o in z_and_x(3)]
    rows = np.random.default_rng(20).uniform(-2, 2, (7, qc.num_parameters))
    whole = StatevectorSimulator(**LAYOUTS[layout]).run(program, rows, observables, None, True)
    chunked = StatevectorSimulator(**LAYOUTS[layout], memory_budget=1)
    parts = chunked.run(program, rows, observables, None, True)
    np.testing.assert_allclose(parts.values, whole.values, atol=TOL)
    np.testing.assert_allclose(parts.gradients, whole.gradients, atol=TOL)


def test_per_row_layout_can_change_between_batches(monkeypatch):
    qc, _, _ = hqcnn_template(3, 1)
    program = compile_circuit(qc)
    obs = [SparsePauliOp("ZIX"), SparsePauliOp("YZI")]
    # 3 per-row RY gates of 8x8 complex128: 3072 bytes per row; allow full matrices for 20 rows
    monkeypatch.setattr(engine_tensors, "PER_ROW_FULL_BYTES", 20 * 3072)
    sim = StatevectorSimulator()
    for count in (2, 22, 2):  # full, local, full
        rows = np.random.default_rng(count).uniform(-2, 2, (count, qc.num_parameters))
        share_weights(qc, rows)
        result = sim.run(program, rows, [pauli_sum(o) for o in obs], None, gradient=True)
        np.testing.assert_allclose(result.gradients, shift_rule_gradient(qc, obs, rows), atol=TOL)


def test_complex_and_imaginary_derivative_types():
    qc = expression_circuit()
    qc.global_phase = 0.0  # a parameterized global phase would change Im <psi|O|d psi>
    values = np.random.default_rng(16).uniform(-1, 1, qc.num_parameters)
    obs = SparsePauliOp("ZYX")
    kinds = {kind: FastEstimatorGradient(derivative_type=kind) for kind in DerivativeType}
    grads = {k: g.run([qc], [obs], [values]).result().gradients[0] for k, g in kinds.items()}
    np.testing.assert_allclose(grads[DerivativeType.COMPLEX].real, grads[DerivativeType.REAL])
    np.testing.assert_allclose(grads[DerivativeType.COMPLEX].imag, grads[DerivativeType.IMAG])
    # 2 Im <psi|O|d psi> from finite differences of the exact statevector
    program, sim = compile_circuit(qc), StatevectorSimulator()
    psi = sim.states(program, values[None]).numpy()[0]
    op = obs.to_matrix()
    eps = 1e-6
    for j in range(qc.num_parameters):
        shift = np.zeros_like(values)
        shift[j] = eps
        plus = sim.states(program, (values + shift)[None]).numpy()[0]
        minus = sim.states(program, (values - shift)[None]).numpy()[0]
        dpsi = (plus - minus) / (2 * eps)
        expected = 2 * np.vdot(psi, op @ dpsi)
        assert abs(grads[DerivativeType.COMPLEX][j] - expected) < 1e-7


def test_gradient_validation_errors():
    qc, _, _ = hqcnn_template(3, 1)
    values = np.zeros(qc.num_parameters)
    gradient = FastEstimatorGradient()
    with pytest.raises(ValueError, match="number of values"):
        gradient.run([qc], [SparsePauliOp("ZZZ")], [values[:-1]])
    with pytest.raises(ValueError, match="qubits"):
        gradient.run([qc], [SparsePauliOp("ZZ")], [values])
    with pytest.raises(ValueError, match="not present"):
        gradient.run([qc], [SparsePauliOp("ZZZ")], [values], parameters=[[Parameter("zz")]])
    with pytest.raises(ValueError, match="not parameterised"):
        gradient.run([QuantumCircuit(3)], [SparsePauliOp("ZZZ")], [[]])


# ----------------------------------------------------------------------------- end to end
def small_qnn_circuit():
    """A 3-qubit circuit for which the reference (param-shift) QNN is quick."""
    x, w = ParameterVector("x", 3), ParameterVector("w", 11)
    qc = QuantumCircuit(3)
    for i in range(3):
        qc.ry(x[i], i)
    for i in range(3):
        qc.rx(w[i], i)
        qc.rz(w[3 + i], i)
    for i in range(3):
        qc.cx(i, (i + 1) % 3)
    qc.h(0)
    qc.cp(w[6], 0, 1)
    qc.crx(2 * w[7] - 0.5, 1, 2)
    qc.ccx(0, 1, 2)
    qc.ry(w[8] + x[0], 2)
    qc.u(w[9], w[10], 0.3, 0)
    return qc, list(x), list(w)


def engine_qnn(qc, obs, x, w, estimator=None, gradient=None) -> EstimatorQNN:
    """``EstimatorQNN`` over ``qc`` with input gradients and exact values (precision 0), on
    ``estimator``/``gradient`` (default: this engine's ``FastEstimator`` and its gradient)."""
    estimator = estimator if estimator is not None else FastEstimator()
    return EstimatorQNN(
        circuit=qc,
        observables=obs,
        input_params=x,
        weight_params=w,
        estimator=estimator,
        gradient=gradient if gradient is not None else FastEstimatorGradient(estimator),
        input_gradients=True,
        default_precision=0.0,
    )


def _qnn(fast: bool):
    qc, x, w = small_qnn_circuit()
    obs = z_and_x(3)
    if fast:
        return engine_qnn(qc, obs, x, w, FastEstimator(), FastEstimatorGradient(FastEstimator()))
    estimator = StatevectorEstimator()
    return engine_qnn(qc, obs, x, w, estimator, ParamShiftEstimatorGradient(estimator))


def test_qnn_forward_and_backward_match_reference():
    fast, ref = _qnn(True), _qnn(False)
    rng = np.random.default_rng(17)
    inputs = rng.uniform(0, math.pi, (3, 3))
    weights = rng.uniform(-math.pi, math.pi, 11)
    np.testing.assert_allclose(
        fast.forward(inputs, weights), ref.forward(inputs, weights), atol=TOL
    )
    for mine, theirs in zip(
        fast.backward(inputs, weights), ref.backward(inputs, weights), strict=True
    ):
        np.testing.assert_allclose(mine, theirs, atol=TOL)
    weights_only = _qnn(True)
    weights_only.input_gradients = False
    ref.input_gradients = False
    mine = weights_only.backward(inputs, weights)
    theirs = ref.backward(inputs, weights)
    assert mine[0] is None and theirs[0] is None
    np.testing.assert_allclose(mine[1], theirs[1], atol=TOL)


def test_torch_connector_forward_and_backward_match_reference():
    rng = np.random.default_rng(18)
    weights = rng.uniform(-math.pi, math.pi, 11)
    inputs = torch.tensor(rng.uniform(0, math.pi, (3, 3)), dtype=torch.float32)
    outputs, grads = [], []
    for fast in (True, False):
        model = TorchConnector(_qnn(fast), initial_weights=weights)
        x = inputs.clone().requires_grad_(True)
        out = model(x)
        (out * torch.arange(1.0, 7.0)).sum().backward()
        outputs.append(out.detach())
        grads.append((x.grad.clone(), model.weight.grad.clone()))
    # TorchConnector returns float32: equal float64 results round to the same float32 values
    torch.testing.assert_close(outputs[0], outputs[1], atol=TOL, rtol=0)
    torch.testing.assert_close(grads[0][0], grads[1][0], atol=TOL, rtol=0)
    torch.testing.assert_close(grads[0][1], grads[1][1], atol=TOL, rtol=0)


def test_forward_cache_does_not_leak_between_different_rows():
    qnn = _qnn(True)
    rng = np.random.default_rng(19)
    weights = rng.uniform(-1, 1, 11)
    first = rng.uniform(0, 1, (2, 3))
    second = first.copy()
    second[1, 2] += 1e-9
    qnn.forward(first, weights)
    a = qnn.backward(second, weights)
    b = _qnn(False).backward(second, weights)
    np.testing.assert_allclose(a[0], b[0], atol=TOL)
    np.testing.assert_allclose(a[1], b[1], atol=TOL)


# ----------------------------------------------------------------------------- fused local layout
def statevector_values(circuit, observables, rows) -> np.ndarray:
    """``(rows, observables)`` by qiskit's ``Statevector`` (one bound circuit per row)."""
    out = []
    for row in rows:
        state = Statevector(circuit.assign_parameters(row))
        out.append([state.expectation_value(o).real for o in observables])
    return np.array(out)


def fused_and_gatewise(program, rows, sums, **options):
    fused = StatevectorSimulator(dense_max_qubits=0, **options)
    gatewise = StatevectorSimulator(dense_max_qubits=0, fusion=False, **options)
    return (
        fused.run(program, rows, sums, None, gradient=True),
        gatewise.run(program, rows, sums, None, gradient=True),
    )


@pytest.mark.parametrize(("num_qubits", "depth", "seed"), [(6, 8, 1), (10, 5, 2), (12, 3, 3)])
def test_fused_layout_matches_statevector_and_gatewise_on_random_circuits(num_qubits, depth, seed):
    qc = parameterized_random_circuit(num_qubits, depth, seed)
    rng = np.random.default_rng(seed)
    rows = rng.uniform(-3, 3, (3, qc.num_parameters))
    rows[:, ::2] = rows[0, ::2]  # shared and per-row gates mixed
    obs = [
        SparsePauliOp.from_sparse_list([("Z", [i], 1.0)], num_qubits) for i in (0, num_qubits - 1)
    ]
    obs.append(SparsePauliOp.from_sparse_list([("XY", [1, num_qubits - 2], 0.5)], num_qubits))
    program = compile_circuit(qc)
    sums = [pauli_sum(o) for o in obs]
    fused, gatewise = fused_and_gatewise(program, rows, sums)
    np.testing.assert_allclose(fused.values, statevector_values(qc, obs, rows), atol=TOL)
    np.testing.assert_allclose(fused.values, gatewise.values, atol=TOL)
    np.testing.assert_allclose(fused.gradients, gatewise.gradients, atol=TOL)
    states = StatevectorSimulator(dense_max_qubits=0).states(program, rows)
    for row, state in zip(rows, states, strict=True):
        expected = Statevector(qc.assign_parameters(row)).data
        np.testing.assert_allclose(state.numpy(), expected, atol=TOL)


@pytest.mark.parametrize("num_qubits", [7, 10])
def test_fused_layer_gradients_match_the_shift_rule(num_qubits, issue_layer):
    qc, _, _ = issue_layer(num_qubits, layers=2)
    obs = [SparsePauliOp.from_sparse_list([("Z", [i], 1.0)], num_qubits) for i in (0, 3)]
    rows = np.random.default_rng(num_qubits).uniform(-np.pi, np.pi, (2, qc.num_parameters))
    share_weights(qc, rows)
    program = compile_circuit(qc)
    fused, gatewise = fused_and_gatewise(program, rows, [pauli_sum(o) for o in obs])
    np.testing.assert_allclose(fused.gradients, shift_rule_gradient(qc, obs, rows), atol=TOL)
    np.testing.assert_allclose(fused.gradients, gatewise.gradients, atol=TOL)


def test_fused_layout_kept_and_undone_states_agree(issue_layer):
    qc, _, _ = issue_layer(8)
    program = compile_circuit(qc)
    sums = [pauli_sum(SparsePauliOp.from_sparse_list([("Z", [i], 1.0)], 8)) for i in range(8)]
    rows = np.random.default_rng(4).uniform(-2, 2, (5, qc.num_parameters))
    share_weights(qc, rows)
    kept = StatevectorSimulator(dense_max_qubits=0).run(program, rows, sums, None, True)
    undone = StatevectorSimulator(dense_max_qubits=0, keep_states_bytes=0, memory_budget=1)
    undone = undone.run(program, rows, sums, None, True)
    np.testing.assert_allclose(kept.values, undone.values, atol=TOL)
    np.testing.assert_allclose(kept.gradients, undone.gradients, atol=TOL)


def test_complex64_accuracy_on_the_fused_layout(issue_layer):
    """complex64 keeps values and gradients within 1e-6 of complex128 (measured ~2e-7)."""
    qc, _, _ = issue_layer(10)
    program = compile_circuit(qc)
    sums = [pauli_sum(SparsePauliOp.from_sparse_list([("Z", [i], 1.0)], 10)) for i in range(10)]
    rows = np.random.default_rng(5).uniform(-np.pi, np.pi, (6, qc.num_parameters))
    share_weights(qc, rows)
    exact = StatevectorSimulator().run(program, rows, sums, None, True)
    single = StatevectorSimulator(dtype=torch.complex64).run(program, rows, sums, None, True)
    np.testing.assert_allclose(single.values, exact.values, atol=1e-6)
    np.testing.assert_allclose(single.gradients, exact.gradients, atol=1e-6)


@pytest.mark.parametrize("num_qubits", [4, 7])
def test_quantum_layer_matches_estimator_qnn(num_qubits):
    qc, x, w = hqcnn_template(num_qubits, 2)
    obs = z_and_x(num_qubits)
    rng = np.random.default_rng(num_qubits)
    inputs = rng.uniform(-2, 2, (5, len(x)))
    weights = rng.uniform(-2, 2, len(w))
    fast = FastEstimator()
    qnn = engine_qnn(qc, obs, x, w, fast)
    values = qnn.forward(inputs, weights)
    input_jac, weight_jac = qnn.backward(inputs, weights)
    layer = ExactTorchLayer(qc, obs, x, w, initial_weights=weights)
    tensor = torch.tensor(inputs, requires_grad=True)
    out = layer(tensor)
    upstream = rng.normal(size=values.shape)
    (out * torch.as_tensor(upstream)).sum().backward()
    np.testing.assert_allclose(out.detach().numpy(), values, atol=TOL)
    np.testing.assert_allclose(
        tensor.grad.numpy(), np.einsum("bm,bmp->bp", upstream, input_jac), atol=TOL
    )
    np.testing.assert_allclose(
        layer.weight.grad.numpy(), np.einsum("bm,bmp->p", upstream, weight_jac), atol=TOL
    )


def test_quantum_layer_rejects_a_partial_parameter_split():
    qc, x, w = hqcnn_template(4, 1)
    with pytest.raises(ValueError, match="partition"):
        ExactTorchLayer(qc, z_and_x(4), x, w[:-1])


# ----------------------------------------------------------------------------- segment path
def segment_circuit() -> QuantumCircuit:
    """Per-row gates of every kind between shared ones: single-qubit, a controlled rotation on
    non-adjacent qubits (permuted axes), one on reversed adjacent qubits (embedded in its span),
    per-row U gates (angle-dependent generators), constant gates inside per-row runs, a
    non-affine angle and a global phase."""
    x = ParameterVector("x", 4)
    w = ParameterVector("w", 9)
    qc = QuantumCircuit(4)
    qc.h(3)
    for i in range(3):
        qc.ry(x[i], i)
    qc.cx(0, 1)
    qc.crx(x[3], 0, 2)
    qc.cry(2 * x[0] - 0.3, 2, 1)
    qc.u(w[0], w[1], w[2], 3)
    qc.cx(3, 0)
    qc.rzz(w[3] * w[4], 1, 2)
    qc.u(x[1], w[5], x[2], 2)
    qc.swap(0, 3)
    qc.u(w[6], w[7], w[8], 1)
    qc.rx(x[3].sin(), 0)
    qc.global_phase = w[0]
    return qc


def test_segment_path_is_taken_and_matches_the_block_path():
    qc = segment_circuit()
    program = compile_circuit(qc)
    obs = [SparsePauliOp("ZIIX"), SparsePauliOp(["YZII", "IIXZ"], [0.5, -1.0])]
    rows = np.random.default_rng(41).uniform(-2, 2, (5, qc.num_parameters))
    share_weights(qc, rows)
    segments, blocks = StatevectorSimulator(), StatevectorSimulator(small_max_qubits=0)
    prepared = segments.prepare(program)
    trace = segments._forward(prepared, rows)
    assert isinstance(trace.tensors, engine_small.SegmentTensors)
    kinds = [segment.per_row for segment in trace.tensors.plan.segments]
    assert kinds == [True, False, True, False, True]
    assert not isinstance(
        blocks._forward(blocks.prepare(program), rows).tensors, engine_small.SegmentTensors
    )
    _segments_equal_blocks(qc, obs, rows)
    states = segments.states(program, rows)
    for row, state in zip(rows, states, strict=True):
        np.testing.assert_allclose(
            state.numpy(), Statevector(qc.assign_parameters(row)).data, atol=TOL
        )


def test_segment_path_gradients_match_finite_differences_of_statevector_estimator():
    qc = segment_circuit()
    obs = [SparsePauliOp("ZIIX"), SparsePauliOp(["YZII", "IIXZ"], [0.5, -1.0])]
    rows = np.random.default_rng(42).uniform(-2, 2, (3, qc.num_parameters))
    share_weights(qc, rows)
    grads, _ = qnn_style_gradients(FastEstimatorGradient(), qc, obs, rows)
    eps = 1e-6
    width = qc.num_parameters
    shifted = np.concatenate(
        [rows[:, None] + eps * np.eye(width), rows[:, None] - eps * np.eye(width)], 1
    )
    for k, observable in enumerate(obs):
        evs = reference_values(qc, observable, shifted)  # (rows, 2P)
        fd = (evs[:, :width] - evs[:, width:]) / (2 * eps)
        np.testing.assert_allclose(grads[:, k], fd, atol=1e-7)


def test_issue_layer_through_torch_connector_on_the_segment_path(issue_layer):
    """The issue-#16 layer at 4 qubits (the bench's TorchConnector column): values and
    gradients equal the block path's and the exact shift rule's (StatevectorEstimator)."""
    qc, x, w = issue_layer(4)
    obs = [SparsePauliOp.from_sparse_list([("Z", [i], 1.0)], 4) for i in range(4)]
    rng = np.random.default_rng(43)
    inputs, weights = rng.uniform(0, np.pi, (6, 4)), rng.uniform(0, 2 * np.pi, len(w))
    results = []
    for options in ({}, {"small_max_qubits": 0}):
        fast = FastEstimator(**options)
        qnn = engine_qnn(qc, obs, x, w, fast)
        results.append((qnn.forward(inputs, weights), *qnn.backward(inputs, weights)))
    for ours, theirs in zip(*results, strict=True):
        np.testing.assert_allclose(ours, theirs, atol=1e-12)
    names = [p.name for p in qc.parameters]
    rows = np.empty((6, len(names)))
    rows[:, [names.index(p.name) for p in x]] = inputs
    rows[:, [names.index(p.name) for p in w]] = weights
    reference = shift_rule_gradient(qc, obs, rows)  # (rows, K, P) in circuit order
    values = np.stack([reference_values(qc, o, rows) for o in obs], axis=1)
    np.testing.assert_allclose(results[0][0], values, atol=TOL)
    np.testing.assert_allclose(
        results[0][1], reference[..., [names.index(p.name) for p in x]], atol=TOL
    )
    np.testing.assert_allclose(
        results[0][2], reference[..., [names.index(p.name) for p in w]], atol=TOL
    )


def test_estimator_qnn_calls_take_the_shared_pub_and_tiled_row_paths(monkeypatch):
    """EstimatorQNN's forward (one PUB per observable, one values array) and backward (the batch
    tiled once per observable) skip PUB coercion and row de-duplication; the results equal
    the general path's (same PUBs as a generator; the gradient rows shuffled)."""
    from qhqcnn.engine import estimator as engine_estimator
    from qhqcnn.engine import gradient as engine_gradient

    qc, x, w = hqcnn_template(3, 1)
    obs = z_and_x(3)
    rng = np.random.default_rng(44)
    inputs, weights = rng.uniform(-2, 2, (5, len(x))), rng.uniform(-2, 2, len(w))
    names = [p.name for p in qc.parameters]
    input_cols = [names.index(p.name) for p in x]
    weight_cols = [names.index(p.name) for p in w]
    values = np.empty((5, len(names)))
    values[:, input_cols], values[:, weight_cols] = inputs, weights
    general = [(qc, o, values) for o in obs]
    expected = FastEstimator().run(iter(general)).result()
    tiled = np.tile(values, (len(obs), 1))
    observables = [o for o in obs for _ in range(5)]
    order = rng.permutation(len(tiled))
    shuffled = FastEstimatorGradient().run(
        [qc] * len(tiled), [observables[i] for i in order], tiled[order]
    )
    expected_grads = np.empty((len(tiled), qc.num_parameters))
    expected_grads[order] = np.asarray(shuffled.result().gradients)

    def refuse(*args, **kwargs):
        raise AssertionError("the general path was taken")

    monkeypatch.setattr(engine_estimator, "coerce_pubs", refuse)
    monkeypatch.setattr(engine_gradient, "unique_rows", refuse)
    fast = FastEstimator()
    ours = fast.run(general).result()
    for mine, theirs, observable in zip(ours, expected, obs, strict=True):
        np.testing.assert_array_equal(mine.data.evs, theirs.data.evs)
        np.testing.assert_array_equal(mine.data.stds, theirs.data.stds)
        assert mine.data.shape == theirs.data.shape == (5,)
        assert mine.metadata == theirs.metadata
        np.testing.assert_allclose(
            mine.data.evs, reference_values(qc, observable, values), atol=TOL
        )
    grads = FastEstimatorGradient(fast).run([qc] * len(tiled), observables, tiled).result()
    np.testing.assert_allclose(np.asarray(grads.gradients), expected_grads, atol=1e-12)
    qnn = engine_qnn(qc, obs, x, w, fast)
    np.testing.assert_allclose(
        qnn.forward(inputs, weights), np.stack([r.data.evs for r in expected], 1), atol=1e-12
    )
    input_jac, weight_jac = qnn.backward(inputs, weights)
    jac = expected_grads.reshape(len(obs), 5, -1).transpose(1, 0, 2)
    np.testing.assert_allclose(input_jac, jac[..., input_cols], atol=1e-12)
    np.testing.assert_allclose(weight_jac, jac[..., weight_cols], atol=1e-12)


# ----------------------------------------------------------------------------- layer (engine3)
def mixed_layer_circuit(num_qubits: int, non_affine: bool = True):
    """RY(x) encoding, U3 + CX ring, then gates whose angles mix inputs and weights (affine),
    a controlled rotation, an RZZ, a global phase and (``non_affine``) a weight-only non-affine
    angle."""
    x = ParameterVector("x", num_qubits)
    w = ParameterVector("w", 3 * num_qubits + 6)
    qc = QuantumCircuit(num_qubits, global_phase=0.3)
    for i in range(num_qubits):
        qc.ry(x[i], i)
    for i in range(num_qubits):
        qc.u(w[3 * i], w[3 * i + 1], w[3 * i + 2], i)
    for i in range(num_qubits):
        qc.cx(i, (i + 1) % num_qubits)
    k = 3 * num_qubits
    qc.rz(x[1] + w[k], 2)
    qc.crx(x[0] - 0.5 * w[k + 1], 0, 3)
    qc.u(w[k + 2] + 0.3, x[2], w[k + 3], num_qubits - 2)
    qc.rzz(w[k + 4], 1, num_qubits - 1)
    qc.rx(w[k + 5] * w[k] if non_affine else w[k + 5], 1)
    return qc, list(x), list(w)


def layer_step(layer, inputs, upstream):
    tensor = torch.tensor(inputs, requires_grad=True)
    out = layer(tensor)
    (out * torch.as_tensor(upstream)).sum().backward()
    return out.detach().numpy(), tensor.grad.numpy(), layer.weight.grad.numpy()


@pytest.mark.parametrize("num_qubits", [6, 7])
def test_quantum_layer_row_summed_weight_terms_match_the_full_jacobian(num_qubits):
    """The fused sweep sums the weight-only gates' transitions over the rows; the result equals
    the per-row Jacobian of the EstimatorQNN path contracted with the upstream gradient."""
    qc, x, w = mixed_layer_circuit(num_qubits)
    obs = z_and_x(num_qubits)
    rng = np.random.default_rng(num_qubits)
    inputs = rng.uniform(-2, 2, (7, len(x)))
    weights = rng.uniform(-2, 2, len(w))
    qnn = engine_qnn(qc, obs, x, w)
    values = qnn.forward(inputs, weights)
    input_jac, weight_jac = qnn.backward(inputs, weights)
    upstream = rng.normal(size=values.shape)
    layer = ExactTorchLayer(qc, obs, x, w, initial_weights=weights)
    assert layer.prepared.fused
    out, input_grad, weight_grad = layer_step(layer, inputs, upstream)
    summed = layer._weight_only_ops(
        layer._forward(torch.tensor(inputs), layer.weight.detach())[1][0].tensors.per_row
    )
    assert summed  # the U3 layer and the RZZ; not the mixed or non-affine gates
    np.testing.assert_allclose(out, values, atol=1e-12)
    np.testing.assert_allclose(input_grad, np.einsum("bm,bmp->bp", upstream, input_jac), atol=1e-12)
    np.testing.assert_allclose(
        weight_grad, np.einsum("bm,bmp->p", upstream, weight_jac), atol=1e-12
    )


@pytest.mark.parametrize("num_qubits, small_max_qubits", [(7, 5), (4, 0), (6, 5)])
@pytest.mark.parametrize("rows", [1, 5])
def test_quantum_layer_torch_gate_backend_matches_numpy(num_qubits, small_max_qubits, rows):
    """Angles and gate matrices built with torch ops (what a CUDA layer uses) give the NumPy
    backend's values and gradients: fused local layout and dense block path, one row or many."""
    qc, x, w = mixed_layer_circuit(num_qubits)  # non-affine: the torch backend falls back
    assert ExactTorchLayer(qc, z_and_x(num_qubits), x, w, gate_backend="torch").gate_backend == (
        "numpy"
    )
    qc, x, w = mixed_layer_circuit(num_qubits, non_affine=False)
    obs = z_and_x(num_qubits)
    rng = np.random.default_rng(3)
    inputs = rng.uniform(-2, 2, (rows, len(x)))
    weights = rng.uniform(-2, 2, len(w))
    upstream = rng.normal(size=(rows, len(obs)))
    results = {}
    for backend in ("numpy", "torch"):
        layer = ExactTorchLayer(
            qc, obs, x, w, weights, gate_backend=backend, small_max_qubits=small_max_qubits
        )
        assert layer.gate_backend == backend
        results[backend] = layer_step(layer, inputs, upstream)
    assert ExactTorchLayer(qc, obs, x, w).gate_backend == "numpy"  # auto on the CPU
    for ours, ref in zip(results["torch"], results["numpy"], strict=True):
        np.testing.assert_allclose(ours, ref, atol=1e-12)


def test_torch_gate_builders_match_the_numpy_models():
    from qhqcnn.engine import gates, torch_gates

    rng = np.random.default_rng(0)
    pauli_y = np.array([[0, -1j], [1j, 0]]) / 2
    models = [
        gates.UGate(),
        gates.UGate(with_phase=True),
        gates.ExponentialGate(pauli_y),
        gates.ExponentialGate(np.diag([0.5, -0.5, 0.5, 1.0])),
        gates.ExponentialGate(rng.normal(size=(4, 4)) + 1j * rng.normal(size=(4, 4))),
        gates.ControlledGate(gates.UGate(with_phase=True), 1, 1),
        gates.ControlledGate(gates.ExponentialGate(pauli_y), 2, 2),
        gates.FixedGate(np.eye(4)[::-1]),
    ]
    for model in models:
        assert torch_gates.supported(model)
        angles = rng.uniform(-3, 3, (5, 3, model.num_angles))
        tensor = torch.as_tensor(angles)
        np.testing.assert_allclose(
            torch_gates.matrices(model, tensor).numpy(), model.matrices(angles), atol=1e-14
        )
        np.testing.assert_allclose(
            torch_gates.generators(model, tensor).numpy(), model.generators(angles), atol=1e-14
        )


@pytest.mark.parametrize("num_qubits", [4, 5])
def test_quantum_layer_segment_path_row_sums_weight_terms(num_qubits, monkeypatch):
    """On the segment path (at most ``small_max_qubits`` qubits) a shared segment of weight-only
    gates gives its terms summed over the rows; the layer's gradients equal the EstimatorQNN
    Jacobian contracted with the upstream gradient and the block path's."""
    qc, x, w = mixed_layer_circuit(num_qubits)
    obs = z_and_x(num_qubits)
    rng = np.random.default_rng(100 + num_qubits)
    inputs = rng.uniform(-2, 2, (6, len(x)))
    weights = rng.uniform(-2, 2, len(w))
    qnn = engine_qnn(qc, obs, x, w, FastEstimator(small_max_qubits=0))
    values = qnn.forward(inputs, weights)
    input_jac, weight_jac = qnn.backward(inputs, weights)
    upstream = rng.normal(size=values.shape)
    seen = []
    original = engine_small.gradient_terms_summed

    def spy(*args):
        out = original(*args)
        seen.append(out[2] is not None)
        return out

    monkeypatch.setattr(engine_small, "gradient_terms_summed", spy)
    layer = ExactTorchLayer(qc, obs, x, w, initial_weights=weights)
    out, input_grad, weight_grad = layer_step(layer, inputs, upstream)
    assert seen == [True]  # the segment path, with row-summed terms
    blocks = ExactTorchLayer(qc, obs, x, w, initial_weights=weights, small_max_qubits=0)
    for ours, theirs in zip(
        (out, input_grad, weight_grad), layer_step(blocks, inputs, upstream), strict=True
    ):
        np.testing.assert_allclose(ours, theirs, atol=1e-12)
    np.testing.assert_allclose(out, values, atol=1e-12)
    np.testing.assert_allclose(input_grad, np.einsum("bm,bmp->bp", upstream, input_jac), atol=1e-12)
    np.testing.assert_allclose(
        weight_grad, np.einsum("bm,bmp->p", upstream, weight_jac), atol=1e-12
    )


def _segments_equal_blocks(qc, obs, rows):
    """Run ``qc`` on the segment and on the block path: values and gradients (real and complex)
    equal at 1e-12; returns the segment trace."""
    program = compile_circuit(qc)
    sums = [pauli_sum(o) for o in obs]
    segments, blocks = StatevectorSimulator(), StatevectorSimulator(small_max_qubits=0)
    for real_only in (True, False):
        ours = segments.run(program, rows, sums, None, True, real_only=real_only)
        theirs = blocks.run(program, rows, sums, None, True, real_only=real_only)
        np.testing.assert_allclose(ours.values, theirs.values, atol=1e-12)
        np.testing.assert_allclose(ours.gradients, theirs.gradients, atol=1e-12)
    np.testing.assert_allclose(ours.values, statevector_values(qc, obs, rows), atol=TOL)
    prepared = segments.prepare(program)
    return prepared, segments._forward(prepared, rows).tensors


@pytest.mark.parametrize("permutation", [True, False])
def test_segment_stack_folds_permutations_only(permutation):
    """A shared segment's gate matrices are gathered with the constant gates after each folded
    in when those are permutations (CX, SWAP, X); other constant gates (H, S) are multiplied."""
    x, w = ParameterVector("x", 3), ParameterVector("w", 9)
    qc = QuantumCircuit(3)
    for i in range(3):
        qc.ry(x[i], i)
    for i in range(3):
        qc.u(w[3 * i], w[3 * i + 1], w[3 * i + 2], i)
        if permutation:
            qc.cx(i, (i + 1) % 3)
            qc.x(i)
        else:
            qc.h(i)
            qc.s((i + 1) % 3)
    qc.swap(0, 2)
    qc.rzz(w[0], 0, 1)
    obs = z_and_x(3)
    rows = np.random.default_rng(7).uniform(-2, 2, (4, qc.num_parameters))
    share_weights(qc, rows)
    prepared, tensors = _segments_equal_blocks(qc, obs, rows)
    shared = [s for s in tensors.plan.segments if not s.per_row]
    assert len(shared) == 1
    assert prepared.memo[("segment-stack", shared[0])][2] is permutation


@pytest.mark.parametrize("first", ["ry_gap", "ry_const", "crx"])
def test_segment_encoding_run_on_zero_state_is_a_product_of_columns(first):
    """A first run of one-qubit gates on ``|0...0>`` (an angle encoding, qubits without a gate
    included) is built as a Kronecker product of the gates' first columns; a run with a
    two-qubit gate is applied gate by gate. Both equal the block path."""
    x, w = ParameterVector("x", 3), ParameterVector("w", 6)
    qc = QuantumCircuit(4)
    if first == "crx":
        qc.crx(x[0], 0, 2)
    else:
        qc.ry(x[0], 1)
        if first == "ry_const":
            qc.h(0)
            qc.ry(x[2], 0)
    qc.rx(x[1], 3)
    qc.cx(1, 2)
    qc.u(w[0], w[1], w[2], 2)
    qc.cx(2, 3)
    qc.u(w[3], w[4], w[5], 1)
    qc.ry(x[0] + x[1], 2)
    obs = z_and_x(4)
    rows = np.random.default_rng(8).uniform(-2, 2, (5, qc.num_parameters))
    share_weights(qc, rows)
    _, tensors = _segments_equal_blocks(qc, obs, rows)
    first_data = tensors.data[0]
    assert tensors.plan.segments[0].per_row
    assert (first_data.before[0] is None) is (first != "crx")


def test_index_by_identity_runs_match_the_general_path():
    """Long lists (EstimatorQNN's tiled requests) are indexed by runs of the same object; the
    result equals the per-item path's, runs or not."""
    from qhqcnn.engine import batching

    objs = [object() for _ in range(5)]
    rng = np.random.default_rng(3)
    tiled = [objs[k] for k in (3, 1, 3, 0) for _ in range(300)]
    scattered = [objs[k] for k in rng.integers(0, 5, 1500)]
    for items in (tiled, scattered, tiled[:700]):
        distinct, index = batching.index_by_identity(items)
        first = {}
        for i, item in enumerate(items):
            first.setdefault(id(item), i)
        order = sorted(first.values())
        assert [id(d) for d in distinct] == [id(items[k]) for k in order]
        expected = [order.index(first[id(item)]) for item in items]
        np.testing.assert_array_equal(index, expected)


def test_segment_path_with_weights_first_and_values_skipped():
    """A shared segment on ``|0...0>`` (weights before the encoding: one real input row for
    all) and a complex state into the per-row run; gradients without values equal those with."""
    x, w = ParameterVector("x", 3), ParameterVector("w", 6)
    qc = QuantumCircuit(3)
    qc.u(w[0], w[1], w[2], 0)
    qc.cx(0, 1)
    qc.ry(w[3], 2)
    for i in range(3):
        qc.ry(x[i], i)
    qc.rzz(w[4], 0, 2)
    qc.rx(w[5], 1)
    obs = z_and_x(3)
    rows = np.random.default_rng(9).uniform(-2, 2, (4, qc.num_parameters))
    share_weights(qc, rows)
    _, tensors = _segments_equal_blocks(qc, obs, rows)
    assert [s.per_row for s in tensors.plan.segments] == [False, True, False]
    assert tensors.data[0].state_real and not tensors.data[1].after_real[0]
    program, sums = compile_circuit(qc), [pauli_sum(o) for o in obs]
    sim = StatevectorSimulator()
    full = sim.run(program, rows, sums, None, True)
    bare = sim.run(program, rows, sums, None, True, with_values=False)
    np.testing.assert_array_equal(full.gradients, bare.gradients)


def test_gradient_rows_are_a_list_numpy_reads_without_a_copy():
    """``FastEstimatorGradient`` returns its rows as a list that ``np.asarray`` turns back into
    the gradient array (no per-row loop); changing the list drops that array."""
    from qhqcnn.engine.gradient import GradientRows

    array = np.arange(12.0).reshape(4, 3)
    rows = GradientRows(array)
    assert isinstance(rows, list) and len(rows) == 4
    assert np.asarray(rows) is array and np.array(rows) is not array
    np.testing.assert_array_equal(np.asarray(rows, dtype=np.float32), array)
    rows[0] = np.ones(3)
    np.testing.assert_array_equal(np.asarray(rows)[0], np.ones(3))
    assert array[0, 0] == 0
    rows = GradientRows(array)
    rows.append(np.full(3, 7.0))
    assert np.asarray(rows).shape == (5, 3)
    qc, x, w = mixed_layer_circuit(4)
    inputs = np.random.default_rng(5).uniform(-1, 1, (3, 4))
    weights = np.random.default_rng(6).uniform(-1, 1, len(w))
    observables = [SparsePauliOp("ZIII")] * 3 + [SparsePauliOp("IXII")] * 3
    values = np.tile(_rows_for(qc, inputs, weights), (2, 1))
    result = FastEstimatorGradient().run([qc] * 6, observables, values).result()
    assert isinstance(result.gradients, GradientRows)
    np.testing.assert_array_equal(np.asarray(result.gradients), np.array(list(result.gradients)))


def _rows_for(qc, inputs, weights):
    names = [p.name for p in qc.parameters]
    rows = np.empty((len(inputs), len(names)))
    for j, name in enumerate(names):
        kind, index = name.split("[")
        index = int(index[:-1])
        rows[:, j] = inputs[:, index] if kind == "x" else weights[index]
    return rows


def test_observable_blocks_only_accept_tiled_requests():
    from qhqcnn.engine.gradient import _observable_blocks

    a, b, c = SparsePauliOp("Z"), SparsePauliOp("X"), SparsePauliOp("Y")
    assert _observable_blocks([a, a, b, b, c, c]) == [a, b, c]
    assert _observable_blocks([a] * 5) == [a]
    assert _observable_blocks([a, b, a, b, a, b]) is None  # interleaved
    assert _observable_blocks([a, a, b, b, a, a]) is None  # a repeated block
    assert _observable_blocks([a, a, b, b, b, c]) is None
    assert _observable_blocks([a, b, b]) is None
    assert _observable_blocks([]) is None
