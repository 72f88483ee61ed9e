"""The quantum layer: a circuit template wrapped in ``EstimatorQNN`` and ``TorchConnector``."""

from __future__ import annotations

import numpy as np
import torch
from qiskit_machine_learning.connectors import TorchConnector
from qiskit_machine_learning.neural_networks import EstimatorQNN
from torch import nn

from qhqcnn.backends.base import ExecutionBackend, PreparedCircuit
from qhqcnn.circuits.template import CircuitTemplate


def build_qnn(prepared: PreparedCircuit, backend: ExecutionBackend) -> EstimatorQNN:
    """``EstimatorQNN`` with input and weight gradients on ``backend``'s estimator/gradient."""
    return EstimatorQNN(
        circuit=prepared.circuit,
        observables=list(prepared.observables),
        input_params=list(prepared.input_params),
        weight_params=list(prepared.weight_params),
        estimator=backend.estimator(),
        gradient=backend.gradient(),
        input_gradients=True,
        default_precision=backend.precision,
    )


class QuantumLayer(nn.Module):
    """A torch layer ``(batch, num_inputs) -> (batch, num_outputs)`` evaluated by a QNN.

    The trainable quantum weights are the ``TorchConnector``'s single weight tensor, so they are
    optimised, checkpointed and synchronised like any other torch parameter.
    """

    def __init__(
        self,
        template: CircuitTemplate,
        backend: ExecutionBackend,
        *,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.template = template
        self.backend = backend
        self.prepared = backend.prepare(template)
        self.qnn = build_qnn(self.prepared, backend)
        initial = template.init_weights(np.random.default_rng(seed))
        self.connector = TorchConnector(self.qnn, initial_weights=initial)

    @property
    def num_inputs(self) -> int:
        return self.template.num_inputs

    @property
    def num_outputs(self) -> int:
        return self.template.num_outputs

    @property
    def weight(self) -> nn.Parameter:
        """The trainable circuit weights, in ``template.weight_params`` order."""
        return self.connector.weight

    def set_backend(self, backend: ExecutionBackend) -> None:
        """Re-target the same trained weights to another execution backend."""
        weights = self.connector.weight.detach().clone()
        self.backend = backend
        self.prepared = backend.prepare(self.template)
        self.qnn = build_qnn(self.prepared, backend)
        self.connector = TorchConnector(self.qnn, initial_weights=weights)

    def forward(self, angles: torch.Tensor) -> torch.Tensor:
        return self.connector(angles).to(angles.dtype)
