"""Execution backends: the single seam that decides which estimator and gradient run a circuit.

A backend turns a :class:`~qhqcnn.circuits.CircuitTemplate` into what ``EstimatorQNN`` needs: a
(possibly transpiled) circuit, observables mapped to its layout, an estimator and an estimator
gradient. Everything above this module (quantum layer, models, training) is backend-agnostic.

Backends are registered by name and loaded lazily, so optional dependencies (Aer noise models,
IBM Runtime) are imported only when that backend is asked for.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from qiskit import QuantumCircuit
from qiskit.circuit import Parameter
from qiskit.primitives import BaseEstimatorV2
from qiskit.quantum_info import SparsePauliOp
from qiskit_machine_learning.gradients import BaseEstimatorGradient

from qhqcnn.circuits.template import CircuitTemplate
from qhqcnn.errors import BackendError, ConfigError


@dataclass(frozen=True)
class PreparedCircuit:
    """The circuit and observables a backend actually executes, with a description of them."""

    circuit: QuantumCircuit
    observables: tuple[SparsePauliOp, ...]
    input_params: tuple[Parameter, ...]
    weight_params: tuple[Parameter, ...]
    info: dict[str, Any] = field(default_factory=dict)


class ExecutionBackend(ABC):
    """Provides the estimator and gradient under ``EstimatorQNN`` for one execution target."""

    name: ClassVar[str]
    #: Precision passed to ``EstimatorQNN`` (0 = exact expectation values).
    precision: float = 0.0

    def prepare(self, template: CircuitTemplate) -> PreparedCircuit:
        """Return the circuit to run for ``template`` (exact backends run it as it is)."""
        return PreparedCircuit(
            circuit=template.circuit,
            observables=template.observables,
            input_params=template.input_params,
            weight_params=template.weight_params,
            info={"depth": template.circuit.depth(), "transpiled": False},
        )

    @abstractmethod
    def estimator(self) -> BaseEstimatorV2:
        """A Qiskit V2 estimator."""

    @abstractmethod
    def gradient(self) -> BaseEstimatorGradient:
        """A qiskit-machine-learning estimator gradient matching :meth:`estimator`."""

    def options(self) -> dict[str, Any]:
        """The options that rebuild this backend with :func:`make_backend` (saved in configs)."""
        return {}


class ExactBackend(ExecutionBackend):
    """The fast exact engine: vectorized statevector values and reverse-mode gradients."""

    name = "exact"

    def __init__(self, device: str = "cpu") -> None:
        self.device = device

    def estimator(self) -> BaseEstimatorV2:
        from qhqcnn.engine import FastEstimator

        return FastEstimator(device=self.device)

    def gradient(self) -> BaseEstimatorGradient:
        from qhqcnn.engine import FastEstimator, FastEstimatorGradient

        return FastEstimatorGradient(FastEstimator(device=self.device))

    def options(self) -> dict[str, Any]:
        return {"device": self.device}


class StatevectorBackend(ExecutionBackend):
    """Qiskit's reference path: ``StatevectorEstimator`` + parameter-shift gradients (slow)."""

    name = "statevector"

    def estimator(self) -> BaseEstimatorV2:
        from qiskit.primitives import StatevectorEstimator

        return StatevectorEstimator()

    def gradient(self) -> BaseEstimatorGradient:
        from qiskit_machine_learning.gradients import ParamShiftEstimatorGradient

        return ParamShiftEstimatorGradient(self.estimator())


#: name -> "module:ClassName", imported on first use.
_REGISTRY: dict[str, str] = {
    "exact": "qhqcnn.backends.base:ExactBackend",
    "statevector": "qhqcnn.backends.base:StatevectorBackend",
    "aer": "qhqcnn.noise.backend:AerBackend",
}


def register_backend(name: str, target: str) -> None:
    """Register a backend class given as ``"module:ClassName"`` under ``name``."""
    _REGISTRY[name] = target


def available_backends() -> list[str]:
    return sorted(_REGISTRY)


def make_backend(name: str, **options: Any) -> ExecutionBackend:
    """Build the backend registered as ``name`` with ``options`` (clear errors for bad input)."""
    if name not in _REGISTRY:
        raise ConfigError(f"unknown backend {name!r}; available: {', '.join(available_backends())}")
    module_name, class_name = _REGISTRY[name].split(":")
    try:
        backend_class = getattr(importlib.import_module(module_name), class_name)
    except ImportError as exc:
        raise BackendError(f"backend {name!r} is unavailable: {exc}") from exc
    try:
        return backend_class(**options)
    except TypeError as exc:
        raise ConfigError(f"bad options for backend {name!r}: {exc}") from exc
