"""HQCNN templates: parameter counts, hand-computed states, and what each block computes."""

from __future__ import annotations

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.circuit.library import QFTGate
from qiskit.quantum_info import Operator, Statevector

from qhqcnn.circuits import (
    angle_encoding,
    fourier_attention,
    fourier_ladder,
    hqcnn_template,
    toffoli_ring,
)
from qhqcnn.circuits.hqcnn import qft_phases, ring_pairs
from qhqcnn.errors import ConfigError


@pytest.mark.parametrize(
    ("qubits", "layers", "attention", "expected"),
    [
        (4, 2, True, 24 + 6 + 8),
        (4, 1, False, 12 + 8),
        (5, 3, True, 45 + 10 + 10),
        (3, 0, True, 3 + 6),
    ],
)
def test_weight_counts(qubits, layers, attention, expected):
    template = hqcnn_template(qubits, layers, attention=attention)
    assert template.num_weights == expected
    assert template.num_inputs == qubits
    assert template.num_outputs == 2 * qubits
    assert set(template.circuit.parameters) == set(template.input_params) | set(
        template.weight_params
    )
    assert template.init_weights(np.random.default_rng(0)).shape == (expected,)


def test_default_template_outputs_and_summary():
    template = hqcnn_template()
    assert template.output_names == ("Z0", "Z1", "Z2", "Z3", "X0", "X1", "X2", "X3")
    summary = template.summary()
    assert summary["num_weights"] == 38
    assert summary["gate_counts"]["ccx"] == 4
    assert summary["gate_counts"]["cx"] == 8


def _expectations(circuit: QuantumCircuit, observables) -> np.ndarray:
    state = Statevector(circuit)
    return np.array([state.expectation_value(op).real for op in observables])


def test_angle_encoding_matches_hand_computed_state():
    x = np.array([0.3, -1.1, 2.0, np.pi / 2])
    circuit, inputs = angle_encoding(4)
    bound = circuit.assign_parameters(dict(zip(inputs, x, strict=True)))
    template = hqcnn_template()  # for its observables (Z_i then X_i)
    values = _expectations(bound, template.observables)
    # RY(x)|0> = cos(x/2)|0> + sin(x/2)|1>: <Z> = cos x, <X> = sin x
    np.testing.assert_allclose(values[:4], np.cos(x), atol=1e-12)
    np.testing.assert_allclose(values[4:], np.sin(x), atol=1e-12)


def test_superposition_encoding_matches_hand_computed_state():
    x = np.array([0.3, -1.1, 2.0, 0.0])
    circuit, inputs = angle_encoding(4, superposition=True)
    bound = circuit.assign_parameters(dict(zip(inputs, x, strict=True)))
    values = _expectations(bound, hqcnn_template().observables)
    # RY(x)H|0> = RY(x)|+>: <X> = cos x, <Z> = -sin x
    np.testing.assert_allclose(values[:4], -np.sin(x), atol=1e-12)
    np.testing.assert_allclose(values[4:], np.cos(x), atol=1e-12)


def test_fourier_ladder_with_qft_phases_is_the_qft():
    n = 4
    ladder = fourier_ladder(n, list(qft_phases(n)))
    # The ladder is Qiskit's QFT (with its swaps) preceded by a reversal of the qubit order.
    reference = QuantumCircuit(n)
    for q in range(n // 2):
        reference.swap(q, n - 1 - q)
    reference.append(QFTGate(n), range(n))
    assert Operator(ladder).equiv(Operator(reference))


def test_attention_without_gating_is_identity():
    n = 4
    phases = np.random.default_rng(1).uniform(-np.pi, np.pi, n * (n - 1) // 2)
    ladder = fourier_ladder(n, list(phases))
    assert Operator(ladder.compose(ladder.inverse())).equiv(Operator(QuantumCircuit(n)))
    block, params = fourier_attention(n)
    assert len(params) == 6
    assert block.count_ops()["ccx"] == n


def test_toffoli_ring_on_a_basis_state():
    # q1 = q3 = 1: CCX(3,1→0) sets q0; CCX(0,2→1) no-op; CCX(1,3→2) sets q2; CCX(2,0→3) clears q3
    start = Statevector.from_label("1010")  # label is q3 q2 q1 q0
    out = start.evolve(toffoli_ring(4))
    assert out.equiv(Statevector.from_label("0111"))


def test_ring_pairs():
    assert ring_pairs(4) == [(0, 1), (1, 2), (2, 3), (3, 0)]
    assert ring_pairs(2) == [(0, 1)]
    assert ring_pairs(1) == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_qubits": 2, "attention": True},
        {"num_qubits": 0},
        {"layers": -1},
        {"encoding": "amplitude"},
    ],
)
def test_invalid_templates_raise_config_errors(kwargs):
    with pytest.raises(ConfigError):
        hqcnn_template(**kwargs)


def test_two_qubit_template_without_attention():
    template = hqcnn_template(2, 1, attention=False)
    assert template.num_weights == 6 + 4


def test_a_new_encoding_is_one_registration():
    """A registered encoding is usable by the templates without editing them."""
    from qiskit import QuantumCircuit
    from qiskit.circuit import ParameterVector

    from qhqcnn.circuits import Encoding, get_encoding, quanv_template, register_encoding
    from qhqcnn.errors import ConfigError

    def rx_block(n: int):
        inputs = ParameterVector("x", n)
        circuit = QuantumCircuit(n, name="rx-encoding")
        for qubit in range(n):
            circuit.rx(inputs[qubit], qubit)
        return circuit, inputs

    register_encoding(
        Encoding("rx-test", rx_block, get_encoding("angle").qubits, get_encoding("angle").classical)
    )
    template = quanv_template(2, encoding="rx-test")
    assert template.num_qubits == 4 and template.num_inputs == 4
    assert "rx" in template.circuit.count_ops()
    with pytest.raises(ConfigError, match="unknown encoding"):
        get_encoding("no-such-encoding")
    with pytest.raises(ConfigError, match="one value per qubit"):
        hqcnn_template(4, encoding="amplitude")
