"""One test per upstream private attribute in ``qhqcnn._compat``: an upgrade fails here first."""

from __future__ import annotations

import numpy as np
import torch
from qiskit.circuit import Parameter, QuantumCircuit
from qiskit.circuit.library import real_amplitudes, zz_feature_map
from qiskit.quantum_info import SparsePauliOp
from qiskit_aer.noise import NoiseModel, ReadoutError, depolarizing_error

from qhqcnn import _compat


def _noise_model() -> NoiseModel:
    model = NoiseModel(basis_gates=["rz", "sx", "x", "cx"])
    model.add_all_qubit_quantum_error(depolarizing_error(0.01, 1), ["sx"])
    model.add_quantum_error(depolarizing_error(0.02, 2), "cx", [0, 1])
    model.add_all_qubit_readout_error(ReadoutError([[0.9, 0.1], [0.2, 0.8]]))
    model.add_readout_error(ReadoutError([[0.95, 0.05], [0.1, 0.9]]), [1])
    return model


def test_noise_model_error_tables():
    model = _noise_model()
    assert set(_compat.default_quantum_errors(model)) == {"sx"}
    local = _compat.local_quantum_errors(model)
    assert set(local) == {"cx"} and set(local["cx"]) == {(0, 1)}
    assert _compat.default_readout_error(model) is not None
    assert set(_compat.local_readout_errors(model)) == {(1,)}


def test_noise_model_custom_passes_round_trip():
    model = _noise_model()
    assert _compat.custom_noise_passes(model) == []
    marker = object()
    _compat.set_custom_noise_passes(model, [marker])
    assert _compat.custom_noise_passes(model) == [marker]


def test_assign_unique_parameters_gives_one_parameter_per_use():
    theta = Parameter("t")
    circuit = QuantumCircuit(1)
    circuit.rx(theta, 0)
    circuit.ry(theta, 0)
    unique = _compat.assign_unique_parameters(circuit)
    assert unique.gradient_circuit.num_parameters == 2
    assert [angle for angle, _ in unique.parameter_map[theta]] == list(
        unique.gradient_circuit.parameters
    )


def test_connector_network_swap_keeps_the_weight_parameter():
    from qiskit_machine_learning.connectors import TorchConnector
    from qiskit_machine_learning.neural_networks import EstimatorQNN

    features, ansatz = zz_feature_map(2), real_amplitudes(2, reps=1)
    circuit = features.compose(ansatz)

    def qnn(observable: str) -> EstimatorQNN:
        return EstimatorQNN(
            circuit=circuit,
            observables=[SparsePauliOp(observable)],
            input_params=list(features.parameters),
            weight_params=list(ansatz.parameters),
            input_gradients=True,
        )

    connector = TorchConnector(qnn("ZZ"), initial_weights=np.zeros(ansatz.num_parameters))
    weight = connector.weight
    other = qnn("XX")
    _compat.set_connector_network(connector, other)
    assert _compat.connector_network(connector) is other and connector.weight is weight
    x = torch.zeros(1, 2)
    expected = other.forward(x.numpy(), weight.detach().numpy())
    np.testing.assert_allclose(connector(x).detach().numpy(), expected, atol=1e-6)
