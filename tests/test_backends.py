"""The contract every registered backend keeps, checked against Qiskit's reference estimator on
circuits the engines were not written for (``CircuitTemplate.from_circuit`` of library
circuits): values, input and weight gradients, shapes, broadcasting and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from qiskit.circuit.library import efficient_su2, zz_feature_map
from qiskit.primitives import StatevectorEstimator
from qiskit.quantum_info import SparsePauliOp

import qhqcnn
from qhqcnn.backends.base import available_backends

#: options that make each backend exact (the noisy one without noise)
EXACT_OPTIONS = {"aer": {"noise": None}}
#: every registered backend, and the exact engine as a native torch layer
CASES = [(name, EXACT_OPTIONS.get(name, {})) for name in available_backends()]
CASES.append(("exact", {"native": True}))
IDS = [name + ("-native" if options.get("native") else "") for name, options in CASES]


@pytest.fixture(scope="module")
def template() -> qhqcnn.CircuitTemplate:
    features = zz_feature_map(3, reps=1)
    ansatz = efficient_su2(3, su2_gates=["ry", "rz"], reps=1, entanglement="circular")
    return qhqcnn.CircuitTemplate.from_circuit(
        features.compose(ansatz),
        inputs=features.parameters,
        weights=ansatz.parameters,
        observables=[SparsePauliOp("ZII"), SparsePauliOp("IXI"), SparsePauliOp(["ZZI", "IYY"])],
    )


def _reference(template, inputs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(batch, outputs) expectation values from Qiskit's StatevectorEstimator."""
    circuit = template.circuit
    order = {p: i for i, p in enumerate(circuit.parameters)}
    rows = np.zeros((len(inputs), circuit.num_parameters))
    for j, p in enumerate(template.input_params):
        rows[:, order[p]] = inputs[:, j]
    for j, p in enumerate(template.weight_params):
        rows[:, order[p]] = weights[j]
    observables = [[o] for o in template.observables]
    evs = StatevectorEstimator().run([(circuit, observables, rows)]).result()[0].data.evs
    return np.asarray(evs).T


def _finite_differences(template, inputs, weights, eps=1e-5):
    def values(x, w):
        return _reference(template, x, w)

    d_inputs = np.stack(
        [
            (values(inputs + eps * e, weights) - values(inputs - eps * e, weights)) / (2 * eps)
            for e in np.eye(inputs.shape[1])
        ],
        axis=-1,
    )  # (batch, outputs, inputs)
    d_weights = np.stack(
        [
            (values(inputs, weights + eps * e) - values(inputs, weights - eps * e)) / (2 * eps)
            for e in np.eye(len(weights))
        ],
        axis=-1,
    )  # (batch, outputs, weights)
    return d_inputs, d_weights


@pytest.mark.parametrize(("backend", "options"), CASES, ids=IDS)
def test_values_and_gradients_match_qiskit(backend, options, template):
    layer = qhqcnn.QuantumLayer(template, backend, seed=5, **options)
    rng = np.random.default_rng(7)
    inputs = rng.uniform(-np.pi, np.pi, (3, template.num_inputs))
    weights = layer.weight.detach().double().numpy()
    x = torch.tensor(inputs, dtype=torch.float64, requires_grad=True)
    out = layer(x)
    assert out.shape == (3, template.num_outputs) and out.dtype == torch.float64
    expected = _reference(template, inputs, weights)
    np.testing.assert_allclose(out.detach().numpy(), expected, atol=1e-6)
    # gradients of a random weighting of the outputs, through torch's autograd
    cotangent = torch.tensor(rng.normal(size=(3, template.num_outputs)))
    (out * cotangent).sum().backward()
    d_inputs, d_weights = _finite_differences(template, inputs, weights)
    c = cotangent.numpy()
    np.testing.assert_allclose(x.grad.numpy(), np.einsum("bo,boi->bi", c, d_inputs), atol=1e-5)
    np.testing.assert_allclose(
        layer.weight.grad.double().numpy(), np.einsum("bo,bow->w", c, d_weights), atol=1e-4
    )


@pytest.mark.parametrize(("backend", "options"), CASES, ids=IDS)
def test_a_batch_of_one_and_the_batch_agree(backend, options, template):
    layer = qhqcnn.QuantumLayer(template, backend, seed=2, **options)
    x = torch.rand(4, template.num_inputs, dtype=torch.float64)
    whole = layer(x).detach()
    single = torch.cat([layer(x[i : i + 1]).detach() for i in range(4)])
    torch.testing.assert_close(whole, single, atol=1e-9, rtol=0)


def test_backend_errors_are_clear(template):
    with pytest.raises(qhqcnn.ConfigError, match="unknown backend"):
        qhqcnn.QuantumLayer(template, "no-such-backend")
    with pytest.raises(qhqcnn.ConfigError, match="bad options"):
        qhqcnn.QuantumLayer(template, "exact", shots=10)
    with pytest.raises(qhqcnn.ConfigError, match="backend options go with a backend name"):
        qhqcnn.QuantumLayer(template, qhqcnn.make_backend("exact"), device="cpu")


def test_prepare_holds_no_state_in_the_backend(template):
    """One backend object prepares two circuits; each keeps its own primitives."""
    backend = qhqcnn.make_backend("aer", noise="depolarizing:p1=0.001,p2=0.01")
    first = backend.prepare(template)
    second = backend.prepare(qhqcnn.hqcnn_template(3, 1))
    assert first.estimator is not second.estimator and first.gradient is not second.gradient
    assert first.noise_model is not None and first.circuit.num_qubits <= 3
    assert vars(backend) == vars(qhqcnn.make_backend("aer", noise="depolarizing:p1=0.001,p2=0.01"))


def test_native_and_connector_layers_agree_and_switch(template):
    """The native exact layer equals the TorchConnector one (values and gradients) and keeps
    its weight Parameter when switched to another native backend."""
    connector = qhqcnn.QuantumLayer(template, "exact", seed=4)
    native = qhqcnn.QuantumLayer(template, "exact", seed=4, native=True)
    x = torch.rand(5, template.num_inputs, dtype=torch.float64)
    a, b = connector(x), native(x)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    a.sum().backward()
    b.sum().backward()
    torch.testing.assert_close(
        connector.weight.grad.double(), native.weight.grad.double(), atol=1e-5, rtol=0
    )
    weight = native.weight
    native.set_backend("exact", native=True)
    assert native.weight is weight
    with pytest.raises(qhqcnn.ConfigError, match="native"):
        native.set_backend("statevector")
