"""The quantum layer: a circuit template wrapped in ``EstimatorQNN`` and ``TorchConnector``."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from qiskit_machine_learning.connectors import TorchConnector
from qiskit_machine_learning.neural_networks import EstimatorQNN
from torch import nn

from qhqcnn import _compat
from qhqcnn.backends.base import ExecutionBackend, PreparedCircuit, make_backend
from qhqcnn.circuits.template import CircuitTemplate
from qhqcnn.errors import ConfigError


def build_qnn(prepared: PreparedCircuit) -> EstimatorQNN:
    """``EstimatorQNN`` with input and weight gradients on ``prepared``'s estimator/gradient."""
    if prepared.estimator is None or prepared.gradient is None:
        raise ConfigError("the prepared circuit has no estimator: prepare it with a backend")
    return EstimatorQNN(
        circuit=prepared.circuit,
        observables=list(prepared.observables),
        input_params=list(prepared.input_params),
        weight_params=list(prepared.weight_params),
        estimator=prepared.estimator,
        gradient=prepared.gradient,
        input_gradients=True,
        default_precision=prepared.precision,
    )


def resolve_backend(backend: ExecutionBackend | str, **options: Any) -> ExecutionBackend:
    """``backend`` itself, or the registered backend of that name built with ``options``."""
    if isinstance(backend, ExecutionBackend):
        if options:
            raise ConfigError("backend options go with a backend name, not a backend object")
        return backend
    if isinstance(backend, str):
        return make_backend(backend, **options)
    raise ConfigError(f"backend must be a name or an ExecutionBackend, got {backend!r}")


def _native(backend: ExecutionBackend) -> bool:
    return bool(getattr(backend, "native", False))


def _native_layer(template: CircuitTemplate, backend: ExecutionBackend, initial) -> nn.Module:
    from qhqcnn.engine import ExactTorchLayer

    return ExactTorchLayer(
        template.circuit,
        template.observables,
        template.input_params,
        template.weight_params,
        initial_weights=initial,
        device=getattr(backend, "device", "cpu"),
    )


class QuantumLayer(nn.Module):
    """A torch layer ``(batch, num_inputs) → (batch, num_outputs)`` evaluated by a circuit.

    The circuit is a :class:`~qhqcnn.circuits.CircuitTemplate`; ``backend`` (a registered name
    such as ``"exact"``, ``"statevector"`` or ``"aer"``, or an
    :class:`~qhqcnn.backends.ExecutionBackend`) decides how it runs. Inputs are the values bound
    to the template's input parameters (angles, for the shipped encodings); outputs are the
    expectation values of its observables. The trainable circuit weights are one torch
    parameter (:attr:`weight`), optimised, checkpointed and moved like any other.

    Args:
        template: the circuit, its input and weight parameters and its observables.
        backend: a backend name or object (default ``"exact"``, the fast exact engine).
        seed: seed of the initial weights (``template.init_weights``).
        **backend_options: options of a backend given by name (e.g. ``noise="fake_nairobi"``
            for ``"aer"``; ``native=True`` for ``"exact"`` runs the engine as a native torch
            autograd function instead of EstimatorQNN + TorchConnector).

    Example: a quantum layer inside a user's own model, trained with a plain torch loop::

        import torch
        from qiskit.circuit.library import real_amplitudes, zz_feature_map
        from qiskit.quantum_info import SparsePauliOp
        from qhqcnn import CircuitTemplate, QuantumLayer

        features = zz_feature_map(2)
        ansatz = real_amplitudes(2, reps=1)
        template = CircuitTemplate.from_circuit(
            features.compose(ansatz),
            inputs=features.parameters,
            weights=ansatz.parameters,
            observables=[SparsePauliOp("ZZ")],
        )
        model = torch.nn.Sequential(QuantumLayer(template), torch.nn.Linear(1, 2))
        optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
        x, y = torch.rand(32, 2), torch.randint(0, 2, (32,))
        for _ in range(10):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
    """

    def __init__(
        self,
        template: CircuitTemplate,
        backend: ExecutionBackend | str = "exact",
        *,
        seed: int = 0,
        **backend_options: Any,
    ) -> None:
        super().__init__()
        self.template = template
        self.backend = resolve_backend(backend, **backend_options)
        self.prepared = self.backend.prepare(template)
        initial = template.init_weights(np.random.default_rng(seed))
        if _native(self.backend):
            self.qnn = None
            self.connector: nn.Module = _native_layer(template, self.backend, initial)
        else:
            self.qnn = build_qnn(self.prepared)
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

    def set_backend(self, backend: ExecutionBackend | str, **backend_options: Any) -> None:
        """Run the same trained weights on another backend.

        The weight parameter stays the same object, so an optimiser built before the call keeps
        training the layer's weights.
        """
        target = resolve_backend(backend, **backend_options)
        if _native(target) or _native(self.backend):
            if not (_native(target) and _native(self.backend)):
                raise ConfigError(
                    "a native exact layer switches only to another native exact backend; "
                    "build a new QuantumLayer for other backends"
                )
            weight = self.connector.weight
            self.connector = _native_layer(self.template, target, weight.detach())
            self.connector.weight = weight  # the same Parameter object stays trained
            self.backend, self.prepared = target, target.prepare(self.template)
            return
        self.backend = target
        self.prepared = self.backend.prepare(self.template)
        self.qnn = build_qnn(self.prepared)
        _compat.set_connector_network(self.connector, self.qnn)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.connector(inputs).to(inputs.dtype)
