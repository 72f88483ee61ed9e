"""Noise-aware simulation: noise models, the aer backend and its engines, checked against Aer."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.primitives import StatevectorEstimator
from qiskit.quantum_info import SparsePauliOp, Statevector
from qiskit_aer import AerSimulator

from qhqcnn.backends import make_backend
from qhqcnn.circuits import hqcnn_template
from qhqcnn.cli import main
from qhqcnn.errors import BackendError, ConfigError
from qhqcnn.noise.backend import AerBackend, density_engine_available
from qhqcnn.noise.models import (
    load_noise,
    parse_noise_spec,
    trim_noise_model,
)
from qhqcnn.noise.readout import apply_readout_error
from qhqcnn.qnn import build_qnn

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
        twin = copy.copy(backend)  # same ISA circuit and noise model, other engine
        twin.engine = "density"
        backends["density"] = (twin, prepared)
    return backends


def _rows(circuit: QuantumCircuit, values: list[dict]) -> np.ndarray:
    return np.array([[v[p.name] for p in circuit.parameters] for v in values])


def _estimate(backend, prepared, values, estimator=None) -> np.ndarray:
    """(num_observables, num_sets) expectation values of ``prepared`` via one broadcast PUB."""
    estimator = estimator or backend.estimator()
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
    backend, _ = device_backends["aer"]
    full = backend.full_prepared
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
    with pytest.raises(BackendError, match="prepare"):
        AerBackend().estimator()


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
    result = backend.estimator().run([pub]).result()[0]
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
    qnn = build_qnn(prepared, backend)
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
    values = backend.estimator().run([pub]).result()[0].data.evs  # (8, 2 * len(chosen) * 2)
    values = values.reshape(8, len(chosen), 2, 2)  # observable, parameter, sign, sample
    fd = (values[:, :, 0] - values[:, :, 1]) / (2 * eps)  # (8, parameter, sample)
    np.testing.assert_allclose(analytic, fd.transpose(2, 0, 1), atol=1e-7)


def test_broadcast_gradient_sends_one_pub(device_backends, template, monkeypatch):
    backend, prepared = device_backends["aer"]
    calls = []
    gradient = backend.gradient()
    original = gradient._estimator.run

    def counting_run(pubs, **kwargs):
        pubs = list(pubs)
        calls.append(len(pubs))
        return original(pubs, **kwargs)

    monkeypatch.setattr(gradient._estimator, "run", counting_run)
    monkeypatch.setattr(backend, "gradient", lambda: gradient)
    qnn = build_qnn(prepared, backend)
    rng = np.random.default_rng(2)
    qnn.backward(rng.uniform(-1, 1, (3, 4)), template.init_weights(rng))
    assert calls == [1]


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
    assert main(["noise", "show", "fake_nowhere"]) == 2


def test_noise_flags_need_the_aer_backend(tmp_path, capsys):
    code = main(["train", "--noise", DEVICE, "--out", str(tmp_path / "x"), "--epochs", "1"])
    assert code == 2 and "--backend aer" in capsys.readouterr().err


@pytest.mark.slow
def test_train_one_epoch_on_fake_torino_noise(tmp_path, breast_dir, capsys):
    out = tmp_path / "noisy"
    argv = ["train", "--backend", "aer", "--noise", DEVICE, "--max-train", "32"]
    argv += ["--max-eval", "32", "--epochs", "1", "--batch-size", "16", "--no-progress"]
    assert main([*argv, "--out", str(out), "--data-dir", breast_dir]) == 0
    record = json.loads((out / "config.json").read_text())
    assert record["config"]["backend"] == "aer"
    assert record["config"]["backend_options"]["noise"] == DEVICE
    circuit = record["circuit"]["backend"]
    assert circuit["noise"] == DEVICE and circuit["simulated_qubits"] <= 6
    metrics = json.loads((out / "metrics_test.json").read_text())
    assert metrics["n_images"] == 32 and 0.0 <= metrics["auc"] <= 1.0
    capsys.readouterr()
    argv = ["evaluate", str(out), "--backend", "aer", "--noise", "fake_brisbane"]
    assert main([*argv, "--data-dir", breast_dir]) == 0
    assert "aer" in capsys.readouterr().out
