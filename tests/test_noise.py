"""Noise-aware simulation: noise models, the aer backend and its engines, checked against Aer."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter
from qiskit.primitives import StatevectorEstimator
from qiskit.quantum_info import SparseObservable, SparsePauliOp, Statevector
from qiskit_aer import AerSimulator
from qiskit_aer.noise import (
    NoiseModel,
    amplitude_damping_error,
    depolarizing_error,
    thermal_relaxation_error,
)

from qhqcnn.backends.base import make_backend
from qhqcnn.circuits import hqcnn_template
from qhqcnn.cli.main import main
from qhqcnn.errors import BackendError, ConfigError
from qhqcnn.nn.quantum_layer import build_qnn
from qhqcnn.noise.backend import AerBackend, density_engine_available
from qhqcnn.noise.models import (
    load_noise,
    parse_noise_spec,
    trim_noise_model,
)
from qhqcnn.noise.readout import apply_readout_error

DEVICE = "fake_torino"
PARAMETRIC = "depolarizing:p1=0.002,p2=0.02+thermal:t1=80e-6,t2=60e-6+readout:p=0.03"
ENGINES = ["aer"] + (["density"] if density_engine_available() else [])


@pytest.fixture(scope="module")
def template():
    return hqcnn_template()


@pytest.fixture(scope="module")
def rng_values(template):
    """Two random parameter sets (inputs + weights), keyed by parameter name."""
    rng = np.random.default_rng(7)
    names = [p.name for p in template.circuit.parameters]
    return [dict(zip(names, rng.uniform(-np.pi, np.pi, len(names)), strict=True)) for _ in range(2)]


@pytest.fixture(scope="module")
def device_backends(template):
    """An AerBackend per engine on fake_torino noise, prepared (transpiled once) for HQCNN."""
    backend = AerBackend(noise=DEVICE, engine="aer")
    prepared = backend.prepare(template)
    backends = {"aer": (backend, prepared)}
    if "density" in ENGINES:
        twin = copy.copy(backend)  # same ISA circuit (cached) and noise model, other engine
        twin.engine = "density"
        backends["density"] = (twin, twin.prepare(template))
    return backends


def _rows(circuit: QuantumCircuit, values: list[dict]) -> np.ndarray:
    return np.array([[v[p.name] for p in circuit.parameters] for v in values])


def _estimate(backend, prepared, values, estimator=None) -> np.ndarray:
    """(num_observables, num_sets) expectation values of ``prepared`` via one broadcast PUB."""
    estimator = estimator or prepared.estimator
    pub = (prepared.circuit, [[o] for o in prepared.observables], _rows(prepared.circuit, values))
    return np.asarray(estimator.run([pub]).result()[0].data.evs)


def _aer_reference(circuit, observables, values, noise_model) -> np.ndarray:
    """Independent Aer density-matrix values of the FULL ISA circuit (all device qubits)."""
    saved = circuit.copy()
    saved.global_phase = 0.0
    for k, obs in enumerate(observables):
        saved.save_expectation_value(obs, qubits=range(saved.num_qubits), label=f"o{k}")
    binds = {p: [v[p.name] for v in values] for p in saved.parameters}
    simulator = AerSimulator(method="density_matrix", noise_model=noise_model)
    result = simulator.run(saved, parameter_binds=[binds]).result()
    return np.array([[result.data(i)[f"o{k}"] for i in range(len(values))] for k in range(8)])


@pytest.fixture(scope="module")
def device_reference(device_backends, rng_values):
    """The full fake_torino ISA circuit, its full noise model and Aer's reference values."""
    backend, prepared = device_backends["aer"]
    full = prepared.device_circuit
    model = backend.source.model
    assert full.circuit.num_qubits == 133 and len(model.noise_qubits) == 133
    return full, model, _aer_reference(full.circuit, full.observables, rng_values, model)


# -- noise models ---------------------------------------------------------------------------------
def test_parametric_specs_parse_and_compose():
    components = parse_noise_spec("depolarizing:p1=1e-3,p2=0.01+thermal:t1=1e-4+readout:p01=0.1")
    assert [c.kind for c in components] == ["depolarizing", "thermal", "readout"]
    assert components[0].params["p2"] == 0.01 and components[1].params["t2"] == 80e-6
    source = load_noise(PARAMETRIC)
    assert source.kind == "parametric" and not source.model.is_ideal()
    assert {"sx", "cz", "measure"} <= set(source.model.noise_instructions)
    assert load_noise(None).model is None and load_noise("ideal").kind == "ideal"
    assert load_noise("depolarizing:p1=0,p2=0").model.is_ideal()


@pytest.mark.parametrize(
    "spec, match",
    [
        ("depolarising:p1=0.1", "unknown noise kind"),
        ("depolarizing:p3=0.1", "bad item"),
        ("depolarizing:p1", "bad item"),
        ("depolarizing:p1=abc", "not a number"),
        ("depolarizing:p1=2", "p1 must be"),
        ("thermal:t1=1e-6,t2=5e-6", "t2"),
        ("readout:p=1.5", "p must be"),
    ],
)
def test_bad_specs_raise_config_error(spec, match):
    with pytest.raises(ConfigError, match=match):
        make_backend("aer", noise=spec)


def test_bad_devices_and_options_raise_clear_errors():
    with pytest.raises(BackendError, match="unknown fake backend"):
        make_backend("aer", noise="fake_nowhere")
    with pytest.raises(ConfigError, match="shots"):
        make_backend("aer", shots=0)
    with pytest.raises(ConfigError, match="engine"):
        make_backend("aer", engine="gpu")
    with pytest.raises(ConfigError, match="bad options"):
        make_backend("aer", noise_level=3)


def test_trimmed_model_gives_identical_results(device_reference, rng_values):
    full, model, reference = device_reference
    layout_qubits = sorted(full.info["layout"])
    trimmed = trim_noise_model(model, layout_qubits)
    assert set(trimmed.noise_qubits) == set(layout_qubits)
    values = _aer_reference(full.circuit, full.observables, rng_values[:1], trimmed)
    np.testing.assert_array_equal(values, reference[:, :1])


# -- values ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("engine", ENGINES)
def test_noisy_values_match_full_aer_reference(
    engine, device_backends, device_reference, rng_values
):
    backend, prepared = device_backends[engine]
    assert prepared.circuit.num_qubits == len(prepared.info["physical_qubits"]) <= 6
    assert prepared.info["physical_qubits"] == sorted(device_reference[0].info["layout"])
    values = _estimate(backend, prepared, rng_values)
    np.testing.assert_allclose(values, device_reference[2], atol=1e-8, rtol=0)
    assert np.abs(values).max() < 0.99  # noise is really there


@pytest.mark.parametrize("noise", [None, "depolarizing:p1=0,p2=0"])
@pytest.mark.parametrize("engine", ENGINES)
def test_zero_noise_reproduces_statevector(noise, engine, template, rng_values):
    backend = AerBackend(noise=noise, engine=engine)
    prepared = backend.prepare(template)
    assert set(prepared.circuit.count_ops()) <= {"rz", "sx", "x", "cx", "barrier"}
    values = _estimate(backend, prepared, rng_values)
    exact = _estimate(None, template, rng_values, StatevectorEstimator())
    np.testing.assert_allclose(values, exact, atol=1e-10, rtol=0)


@pytest.mark.parametrize("readout", [False, True])
def test_parametric_noise_engines_agree(readout, template, rng_values):
    if len(ENGINES) < 2:
        pytest.skip("density engine unavailable")
    results = []
    for engine in ENGINES:
        backend = AerBackend(noise=PARAMETRIC, engine=engine, readout=readout)
        results.append(_estimate(backend, backend.prepare(template), rng_values))
    np.testing.assert_allclose(results[0], results[1], atol=1e-8, rtol=0)


@pytest.mark.parametrize("engine", ENGINES)
def test_shots_sample_within_five_sigma(engine, template, rng_values):
    shots = 2000
    exact_backend = AerBackend(noise=PARAMETRIC, engine=engine)
    prepared = exact_backend.prepare(template)
    exact = _estimate(exact_backend, prepared, rng_values)
    backend = AerBackend(noise=PARAMETRIC, engine=engine, shots=shots)
    prepared = backend.prepare(template)
    assert backend.precision == pytest.approx(shots**-0.5)
    pub = (
        prepared.circuit,
        [[o] for o in prepared.observables],
        _rows(prepared.circuit, rng_values),
    )
    result = prepared.estimator.run([pub]).result()[0]
    sampled, stds = np.asarray(result.data.evs), np.asarray(result.data.stds)
    sigma = np.sqrt((1 - exact**2) / shots)
    np.testing.assert_allclose(stds, sigma, rtol=1e-12)
    assert np.all(np.abs(sampled - exact) <= 5 * sigma)
    assert not np.allclose(sampled, exact)
    counts = (sampled + 1) * shots / 2  # binomial counts, not Gaussian jitter
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-6)


def test_readout_transform_matches_confusion_matrices():
    circuit = QuantumCircuit(2)
    circuit.ry(0.7, 0)
    circuit.rx(1.1, 1)
    circuit.cx(0, 1)
    flips = {0: (0.05, 0.10), 1: (0.02, 0.07)}
    probs = Statevector(circuit).probabilities()  # index = b1 b0
    confusion = [np.array([[1 - p01, p10], [p01, 1 - p10]]) for p01, p10 in (flips[0], flips[1])]
    noisy = (np.kron(confusion[1], confusion[0]) @ probs).reshape(2, 2)  # [b1, b0]
    signs = {"IZ": [[1, -1], [1, -1]], "ZI": [[1, 1], [-1, -1]], "ZZ": [[1, -1], [-1, 1]]}
    for label, sign in signs.items():
        observable = apply_readout_error(SparsePauliOp(label), flips)
        value = Statevector(circuit).expectation_value(observable).real
        assert value == pytest.approx(float((noisy * np.array(sign)).sum()), abs=1e-12)


# -- gradients ------------------------------------------------------------------------------------
@pytest.mark.parametrize("engine", ENGINES)
def test_gradients_match_finite_differences(engine, device_backends, template):
    backend, prepared = device_backends[engine]
    qnn = build_qnn(prepared)
    rng = np.random.default_rng(1)
    x = rng.uniform(-np.pi, np.pi, (2, template.num_inputs))
    w = template.init_weights(rng)
    input_grad, weight_grad = qnn.backward(x, w)
    analytic = np.concatenate([input_grad, weight_grad[:, :, [0, 17, 30, 37]]], axis=2)
    # central differences of the noisy exact values, all shifted rows in one PUB
    eps, order = 1e-5, {p: j for j, p in enumerate(prepared.circuit.parameters)}
    base = np.zeros((2, len(order)))
    for j, p in enumerate((*template.input_params, *template.weight_params)):
        base[:, order[p]] = np.concatenate([x, np.broadcast_to(w, (2, len(w)))], axis=1)[:, j]
    chosen = [*template.input_params, *(template.weight_params[j] for j in (0, 17, 30, 37))]
    rows = []
    for p in chosen:
        for sign in (1, -1):
            shifted = base.copy()
            shifted[:, order[p]] += sign * eps
            rows.append(shifted)
    pub = (prepared.circuit, [[o] for o in prepared.observables], np.concatenate(rows))
    values = prepared.estimator.run([pub]).result()[0].data.evs  # (8, 2 * len(chosen) * 2)
    values = values.reshape(8, len(chosen), 2, 2)  # observable, parameter, sign, sample
    fd = (values[:, :, 0] - values[:, :, 1]) / (2 * eps)  # (8, parameter, sample)
    np.testing.assert_allclose(analytic, fd.transpose(2, 0, 1), atol=1e-7)


def test_broadcast_gradient_sends_one_pub(device_backends, template, monkeypatch):
    backend, prepared = device_backends["aer"]
    calls = []
    gradient = prepared.gradient
    original = gradient._estimator.run

    def counting_run(pubs, **kwargs):
        pubs = list(pubs)
        calls.append(len(pubs))
        return original(pubs, **kwargs)

    monkeypatch.setattr(gradient._estimator, "run", counting_run)
    qnn = build_qnn(prepared)
    rng = np.random.default_rng(2)
    qnn.backward(rng.uniform(-1, 1, (3, 4)), template.init_weights(rng))
    assert calls == [1]


# -- density engine: adjoint gradients, fused programs -------------------------------------------
def _density():
    if not density_engine_available():
        pytest.skip("density engine unavailable")
    from qhqcnn.noise import density

    return density


def _mixed_circuit(aer_gates_only: bool = False) -> QuantumCircuit:
    """3 qubits, parameters shared between gates, every kind of parameterized step: RZ (phase),
    RX, RZZ, CP, CRX (exp), U, R, CU (generic); CRX and CU only where Aer is not the reference
    (its density-matrix method has neither)."""
    a, b, c, d, e = (Parameter(name) for name in "abcde")
    circuit = QuantumCircuit(3)
    circuit.h(0)
    circuit.sx(1)
    circuit.x(2)
    circuit.rx(a, 0)
    circuit.u(b, 0.3, c, 1)
    circuit.cx(0, 1)
    circuit.rzz(d, 1, 2)
    circuit.rz(a, 2)
    circuit.cp(e, 2, 0)
    if not aer_gates_only:
        circuit.crx(b, 1, 2)
    circuit.r(c, 0.4 * d, 1)
    circuit.cz(1, 2)
    circuit.sx(0)
    if not aer_gates_only:
        circuit.cu(a, d, 0.2, e, 0, 2)
    circuit.rz(e, 1)
    circuit.sx(2)
    circuit.h(1)
    circuit.rz(1.3 * a - e, 0)
    return circuit


def _mixed_noise():
    """Depolarizing + thermal + amplitude damping (non-unital), all-qubit and local errors."""
    one = depolarizing_error(0.02, 1).compose(thermal_relaxation_error(50e-6, 40e-6, 1e-6))
    model = NoiseModel()
    model.add_all_qubit_quantum_error(one, ["rx", "u", "r", "sx", "h", "x"])
    two = ["cx", "rzz", "cp", "crx", "cu", "cz"]
    model.add_all_qubit_quantum_error(depolarizing_error(0.05, 2), two)
    model.add_quantum_error(amplitude_damping_error(0.1), ["sx"], [0])
    damping = amplitude_damping_error(0.05).tensor(amplitude_damping_error(0.2))
    model.add_quantum_error(depolarizing_error(0.1, 2).compose(damping), ["cz"], [1, 2])
    return model


MIXED_OBSERVABLES = [
    SparsePauliOp(["ZII", "IXY", "YZX"], [0.5, -1.2, 0.3]),
    SparsePauliOp(["XXI", "III", "ZZZ"], [1.0, 0.25, -0.7]),
    SparsePauliOp(["IIZ"]),
]


def _mixed_rows(case: str) -> np.ndarray:
    rng = np.random.default_rng(3)
    rows = rng.uniform(-np.pi, np.pi, (5, 5))
    if case == "shared a":  # the first gate is the same for all rows
        rows[:, 0] = rows[0, 0]
    elif case == "only e varies":  # rows differ only from the middle of the circuit on
        rows[:, :4] = rows[0, :4]
    elif case == "identical":
        rows[:] = rows[0]
    elif case == "one row":
        rows = rows[:1]
    return rows


@pytest.mark.filterwarnings("ignore:.*overrides previously defined")
@pytest.mark.parametrize("case", ["all vary", "shared a", "only e varies", "identical", "one row"])
@pytest.mark.parametrize(
    "tangents, budget, fuse",
    [
        (None, None, True),
        (True, None, True),
        (False, None, True),
        (True, 1 << 16, True),
        (False, 1 << 14, True),
        (True, None, False),
        (False, 1 << 16, False),
    ],
    ids=["auto", "tangents", "reverse", "tangents-chunked", "rowwise", "unfused", "unfused-rows"],
)
def test_adjoint_gradients_equal_autograd(case, tangents, budget, fuse, monkeypatch):
    """Before the split: tangents (forward mode) or per-row co-states; after it: steps fused
    into blocks or one by one; in chunks of a few rows or one (``budget``; the shared backward
    sweep of the first chunk reused by the others)."""
    density = _density()
    monkeypatch.setattr(density, "TANGENTS", tangents)
    monkeypatch.setattr(density, "FUSE_AFTER_SPLIT", fuse)
    if budget is not None:
        monkeypatch.setattr(density, "MEMORY_BUDGET", budget)
    circuit = _mixed_circuit()
    noisy = density.build_noisy_program(circuit, _mixed_noise())
    kinds = {step.kind for step in noisy.steps}
    assert kinds == {"const", "phase", "exp", "generic"}
    weights = density.pauli_weights(MIXED_OBSERVABLES, 3)
    rows = _mixed_rows(case)
    values, grads = density.simulate(noisy, rows, weights, gradient=True)
    plain, _ = density.simulate(noisy, rows, weights)
    ref_values, ref_grads = density._simulate_autograd(noisy, rows, weights)
    assert grads.shape == (len(rows), 3, 5) and np.abs(ref_grads).max() > 0.1
    np.testing.assert_allclose(values, ref_values, atol=1e-12, rtol=0)
    np.testing.assert_allclose(plain, ref_values, atol=1e-12, rtol=0)
    np.testing.assert_allclose(grads, ref_grads, atol=1e-10, rtol=0)


@pytest.mark.filterwarnings("ignore:.*overrides previously defined")
def test_fused_mixed_circuit_matches_aer():
    density = _density()
    circuit, model = _mixed_circuit(aer_gates_only=True), _mixed_noise()
    fused = density.build_noisy_program(circuit, model)
    unfused = density.build_noisy_program(circuit, model, fuse=0)
    assert len(fused.steps) < len(unfused.steps)
    weights = density.pauli_weights(MIXED_OBSERVABLES, 3)
    rows = _mixed_rows("all vary")[:3]
    values, _ = density.simulate(fused, rows, weights)
    np.testing.assert_allclose(values, density.simulate(unfused, rows, weights)[0], atol=1e-13)
    reference = []
    for row in rows:
        bound = circuit.assign_parameters(dict(zip(circuit.parameters, row, strict=True)))
        for k, observable in enumerate(MIXED_OBSERVABLES):
            bound.save_expectation_value(observable, qubits=range(3), label=f"o{k}")
        result = AerSimulator(method="density_matrix", noise_model=model).run(bound).result()
        reference.append([result.data(0)[f"o{k}"] for k in range(len(MIXED_OBSERVABLES))])
    np.testing.assert_allclose(values, np.array(reference), atol=1e-8, rtol=0)


def test_fusion_shrinks_the_device_program(device_backends, rng_values):
    density = _density()
    backend, prepared = device_backends["aer"]
    fused = density.build_noisy_program(prepared.circuit, prepared.noise_model)
    unfused = density.build_noisy_program(prepared.circuit, prepared.noise_model, fuse=0)
    parametric = [step for step in fused.steps if step.ptm is None]
    assert len(parametric) == sum(step.ptm is None for step in unfused.steps) == 72
    assert {step.kind for step in parametric} == {"phase"}  # the ISA's parameterized RZ
    assert len(fused.steps) < 0.4 * len(unfused.steps)
    assert max(len(step.qubits) for step in fused.steps) == 2
    rows = _rows(prepared.circuit, rng_values)
    weights = density.pauli_weights(prepared.observables, fused.num_qubits)
    np.testing.assert_allclose(
        density.simulate(fused, rows, weights)[0],
        density.simulate(unfused, rows, weights)[0],
        atol=1e-13,
    )


def test_pauli_weights_read_sparse_observables_directly():
    density = _density()
    ops = [SparsePauliOp(["IXYZ", "ZZII", "IIII", "XIIX", "XIIX"], [1.0, -0.5, 2.0, 0.25, 0.5])]
    ops.append(SparsePauliOp(["YYYY"], [-1.5]))
    sparse = [SparseObservable.from_sparse_pauli_op(op) for op in ops]
    sparse.append(SparseObservable.from_label("+0IZ"))  # projectors: through SparsePauliOp
    ops.append(SparsePauliOp.from_sparse_observable(sparse[-1]))
    direct = density.pauli_weights(sparse, 4).numpy()
    np.testing.assert_array_equal(direct, density.pauli_weights(ops, 4).numpy())
    assert direct[0, 0] == 2.0 and direct[0, 3 + 4 * 2 + 16 * 1] == 1.0  # Z on 0, Y on 1, X on 2
    assert direct[0, 1 + 64] == 0.75 and direct[1, 170] == -1.5
    with pytest.raises(BackendError, match="complex"):
        density.pauli_weights([SparseObservable.from_sparse_pauli_op(SparsePauliOp("Z", 1j))], 1)
    for _ in range(2):  # the second time from the cache of rows: same result, same error
        np.testing.assert_array_equal(density.pauli_weights(ops, 4).numpy(), direct)
        with pytest.raises(BackendError, match="observable on 4 qubits"):
            density.pauli_weights(ops, 5)


@pytest.mark.filterwarnings("ignore:.*overrides previously defined")
def test_density_gradient_selects_parameters_and_validates():
    density = _density()
    circuit = _mixed_circuit()
    gradient = density.DensityMatrixGradient(density.DensityMatrixEstimator(_mixed_noise()))
    rows = _mixed_rows("all vary")[:2]
    observable = MIXED_OBSERVABLES[0]
    a, b, c, d, e = circuit.parameters
    job = gradient.run([circuit] * 2, [observable] * 2, rows, [None, [e, a]])
    result = job.result()
    full = density.simulate(
        density.build_noisy_program(circuit, _mixed_noise()),
        rows,
        density.pauli_weights([observable], 3),
        gradient=True,
    )[1][:, 0]
    np.testing.assert_allclose(result.gradients[0], full[0], atol=1e-12)
    np.testing.assert_allclose(result.gradients[1], full[1, [4, 0]], atol=1e-12)
    assert list(result.metadata[0]["parameters"]) == [a, b, c, d, e]
    assert list(result.metadata[1]["parameters"]) == [e, a]
    with pytest.raises(ValueError, match="number of circuits"):
        gradient.run([circuit] * 2, [observable], rows)
    with pytest.raises(ValueError, match="not present"):
        gradient.run([circuit], [observable], rows[:1], [[Parameter("z")]])


@pytest.mark.filterwarnings("ignore:.*overrides previously defined")
def test_one_row_numpy_path_equals_torch_path():
    """One parameter row runs the NumPy sweep (``_adjoint_shared``); the same row twice the
    torch adjoint: equal to rounding, values alone and with gradients."""
    density = _density()
    noisy = density.build_noisy_program(_mixed_circuit(), _mixed_noise())
    weights = density.pauli_weights(MIXED_OBSERVABLES, 3)
    for row in _mixed_rows("all vary")[:3]:
        one, one_grads = density.simulate(noisy, row[None], weights, gradient=True)
        plain, none = density.simulate(noisy, row[None], weights)
        two, two_grads = density.simulate(noisy, np.stack([row, row]), weights, gradient=True)
        assert none is None and "shared" in noisy.plans and np.abs(two_grads).max() > 0.1
        np.testing.assert_allclose(one, two[:1], atol=1e-13, rtol=0)
        np.testing.assert_allclose(plain, two[:1], atol=1e-13, rtol=0)
        np.testing.assert_allclose(one_grads, two_grads[:1], atol=1e-12, rtol=0)
    empty = density.simulate(noisy, row[None], weights[:0], gradient=True)
    assert empty[0].shape == (1, 0) and empty[1].shape == (1, 0, 5)


def _one_row_results(estimator, gradient, circuit, observables, row):
    values = [estimator.run([(circuit, o, row)]).result()[0].data.evs for o in observables]
    grads = gradient.run([circuit] * len(observables), observables, [row] * len(observables))
    return np.array(values), np.array(grads.result().gradients)


@pytest.mark.filterwarnings("ignore:.*overrides previously defined")
def test_program_cache_follows_circuit_noise_and_observable_changes():
    """The cached noisy program (and its one-row plan) is rebuilt when the noise model's errors
    for the circuit change in place, or the circuit does; observables are read on every call.
    Each case compares with a fresh estimator on copies."""
    density = _density()
    circuit, model = _mixed_circuit(), NoiseModel()  # starts ideal
    observables = [SparsePauliOp(op) for op in MIXED_OBSERVABLES]
    row = _mixed_rows("one row")[0]
    estimator = density.DensityMatrixEstimator(model)
    gradient = density.DensityMatrixGradient(estimator)

    def check():
        fresh = density.DensityMatrixEstimator(copy.deepcopy(model))
        expected = _one_row_results(
            fresh, density.DensityMatrixGradient(fresh), circuit.copy(), observables, row
        )
        got = _one_row_results(estimator, gradient, circuit, observables, row)
        for a, b in zip(got, expected, strict=True):
            np.testing.assert_allclose(a, b, atol=1e-13, rtol=0)
        return got

    results = [check()]
    model.add_all_qubit_quantum_error(depolarizing_error(0.05, 2), ["cx", "cz"])  # ideal → noisy
    results.append(check())
    model.add_quantum_error(amplitude_damping_error(0.2), ["rx"], [0])  # a new local error
    results.append(check())
    model.add_all_qubit_quantum_error(depolarizing_error(0.1, 2), ["cx"])  # composed in place
    results.append(check())
    circuit.rx(0.7, 1)  # the circuit, in place
    results.append(check())
    observables[0] = SparsePauliOp(["ZZZ", "XIX"], [0.3, 1.1])
    results.append(check())
    observables[1].coeffs[0] = 2.5  # an observable edited in place (weights cached by content)
    results.append(check())
    for before, after in zip(results, results[1:], strict=False):
        assert np.abs(before[0] - after[0]).max() > 1e-4  # every change changed the values


# -- command line ---------------------------------------------------------------------------------
def test_noise_list_and_show(capsys):
    assert main(["noise", "list"]) == 0
    out = capsys.readouterr().out
    assert "fake_torino" in out and "depolarizing:p1=" in out and "readout:p=" in out
    assert main(["noise", "show", "fake_manila", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["kind"] == "device" and summary["qubits"]
    first = next(iter(summary["per_qubit"].values()))
    assert {"t1", "t2", "readout_p01", "readout_p10"} <= set(first)
    assert "cx" in summary["gate_errors"]
    assert main(["noise", "show", PARAMETRIC]) == 0
    assert "all qubits" in capsys.readouterr().out
    assert main(["noise", "show", "fake_nowhere"]) == BackendError.exit_code


def test_noise_flags_need_the_aer_backend(tmp_path, capsys):
    code = main(["train", "--noise", DEVICE, "--out", str(tmp_path / "x"), "--epochs", "1"])
    assert code == ConfigError.exit_code and "--backend aer" in capsys.readouterr().err


@pytest.mark.slow
def test_train_one_epoch_on_fake_torino_noise(tmp_path, breast_dir, capsys, check_run):
    out = tmp_path / "noisy"
    argv = ["train", "--backend", "aer", "--noise", DEVICE, "--max-train", "32"]
    argv += ["--max-eval", "32", "--epochs", "1", "--batch-size", "16", "--no-progress"]
    assert main([*argv, "--out", str(out), "--data-dir", breast_dir]) == 0
    record = json.loads((out / "config.json").read_text())
    assert record["config"]["backend"] == "aer"
    assert record["config"]["backend_options"]["noise"] == DEVICE
    circuit = record["circuit"]["backend"]
    assert circuit["noise"] == DEVICE and circuit["simulated_qubits"] <= 6
    check_run(out, n_images=32)
    capsys.readouterr()
    argv = ["evaluate", str(out), "--backend", "aer", "--noise", "fake_brisbane"]
    assert main([*argv, "--data-dir", breast_dir]) == 0
    assert "aer" in capsys.readouterr().out


@pytest.mark.parametrize("num_rows", [1, 2])  # 1: the one-row NumPy path
@pytest.mark.parametrize("num_qubits", [4, 5])
def test_density_engine_matches_aer_density_matrix_values_and_gradients(
    num_qubits, num_rows, issue_layer
):
    """The noisy table of bench_peers.py: values and the full Jacobian against Aer's
    density-matrix method with the same depolarizing model (Aer gradients by the shift rule on
    the parameters: each is one RY/U angle, so +-pi/2 shifts are exact and keep the gates)."""
    from qiskit_aer.primitives import EstimatorV2 as AerEstimator

    from qhqcnn.noise.density import DensityMatrixEstimator, DensityMatrixGradient

    model = NoiseModel()
    model.add_all_qubit_quantum_error(depolarizing_error(1e-3, 1), ["ry", "u"])
    model.add_all_qubit_quantum_error(depolarizing_error(1e-2, 2), ["cx"])
    qc, _, _ = issue_layer(num_qubits, layers=2)
    obs = [SparsePauliOp.from_sparse_list([("Z", [i], 1.0)], num_qubits) for i in (0, 2)]
    obs.append(SparsePauliOp.from_sparse_list([("XY", [1, 3], 0.5)], num_qubits))
    rng = np.random.default_rng(num_qubits)
    rows = rng.uniform(-np.pi, np.pi, (2, qc.num_parameters))[:num_rows]
    count = qc.num_parameters
    shifts = np.concatenate([np.zeros((1, count)), np.eye(count), -np.eye(count)]) * np.pi / 2
    table = (rows[:, None, :] + shifts[None]).reshape(-1, count)
    observables = np.empty((len(obs), 1), dtype=object)
    for k, item in enumerate(obs):
        observables[k, 0] = item
    aer = AerEstimator(
        options={
            "default_precision": 0.0,
            "backend_options": {"method": "density_matrix", "noise_model": model},
        }
    )
    evs = aer.run([(qc, observables, table)]).result()[0].data.evs
    evs = evs.reshape(len(obs), len(rows), 1 + 2 * count)
    ref_values = evs[:, :, 0]
    ref_grads = (evs[:, :, 1 : 1 + count] - evs[:, :, 1 + count :]) / 2  # (K, rows, P)

    estimator = DensityMatrixEstimator(model)
    values = np.stack(
        [estimator.run([(qc, o, rows)]).result()[0].data.evs for o in obs]
    )  # (K, rows)
    np.testing.assert_allclose(values, ref_values, atol=1e-10, rtol=0)
    gradient = DensityMatrixGradient(estimator)
    result = gradient.run(
        [qc] * (len(obs) * len(rows)),
        [o for o in obs for _ in rows],
        np.tile(rows, (len(obs), 1)),
    ).result()
    grads = np.asarray(result.gradients).reshape(len(obs), len(rows), count)
    np.testing.assert_allclose(grads, ref_grads, atol=1e-10, rtol=0)
