"""Execution backends: the single seam that decides which estimator and gradient run a circuit.

A backend turns a :class:`~qhqcnn.circuits.CircuitTemplate` into what ``EstimatorQNN`` needs:
:meth:`ExecutionBackend.prepare` returns a :class:`PreparedCircuit` that owns the (possibly
transpiled) circuit, the observables mapped to its layout, and the estimator and estimator
gradient that run it. A backend keeps only its options, no state from one ``prepare`` to the
next, so one backend object can serve several layers. Everything above this module (quantum
layer, models, training) is backend-agnostic.

Backends are registered by name and loaded lazily, so optional dependencies (Aer noise models,
IBM Runtime) are imported only when that backend is asked for.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
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
    """The circuit and observables a backend actually executes, and the primitives that run it.

    Attributes:
        circuit: the circuit as executed (the template's, or its ISA form on a device).
        observables: the outputs, mapped to ``circuit``'s qubits.
        input_params, weight_params: ``circuit``'s parameters, in the template's order.
        info: a JSON-ready description (depth, transpilation, noise, ...).
        estimator: the V2 estimator that evaluates ``circuit`` (``None`` for a circuit that is
            only transpiled, as the hardware path does).
        gradient: the estimator gradient matching ``estimator``.
        precision: the precision ``EstimatorQNN`` passes to ``estimator`` (0 = exact).
        noise_model: the Aer noise model on ``circuit``'s qubits, for noisy backends.
        device_circuit: for a circuit shrunk to the qubits it uses, the ISA circuit on all of
            the device's qubits (what a device would run).
    """

    circuit: QuantumCircuit
    observables: tuple[SparsePauliOp, ...]
    input_params: tuple[Parameter, ...]
    weight_params: tuple[Parameter, ...]
    info: dict[str, Any] = field(default_factory=dict)
    estimator: BaseEstimatorV2 | None = field(default=None, repr=False, compare=False)
    gradient: BaseEstimatorGradient | None = field(default=None, repr=False, compare=False)
    precision: float = 0.0
    noise_model: Any = field(default=None, repr=False, compare=False)
    device_circuit: PreparedCircuit | None = field(default=None, repr=False, compare=False)


class ExecutionBackend(ABC):
    """Prepares circuits for one execution target: the circuit it runs and the primitives.

    Subclasses implement :meth:`_primitives` (and override :meth:`_prepare_circuit` when they
    run something other than the template's own circuit). They hold options only.
    """

    name: ClassVar[str]

    @property
    def precision(self) -> float:
        """The precision ``EstimatorQNN`` passes to the estimator (0 = exact values)."""
        return 0.0

    def prepare(self, template: CircuitTemplate) -> PreparedCircuit:
        """The circuit, observables, estimator and gradient that run ``template`` here."""
        prepared = self._prepare_circuit(template)
        estimator, gradient = self._primitives(prepared)
        return replace(prepared, estimator=estimator, gradient=gradient, precision=self.precision)

    def _prepare_circuit(self, template: CircuitTemplate) -> PreparedCircuit:
        """The circuit to run for ``template`` (exact backends run it as it is)."""
        return PreparedCircuit(
            circuit=template.circuit,
            observables=template.observables,
            input_params=template.input_params,
            weight_params=template.weight_params,
            info={"depth": template.circuit.depth(), "transpiled": False},
        )

    @abstractmethod
    def _primitives(
        self, prepared: PreparedCircuit
    ) -> tuple[BaseEstimatorV2, BaseEstimatorGradient]:
        """A Qiskit V2 estimator for ``prepared`` and a qiskit-machine-learning estimator
        gradient that uses it."""

    def options(self) -> dict[str, Any]:
        """The options that rebuild this backend with :func:`make_backend` (saved in configs)."""
        return {}


class ExactBackend(ExecutionBackend):
    """The fast exact engine: vectorized statevector values and reverse-mode gradients."""

    name = "exact"

    def __init__(self, device: str = "cpu", native: bool = False) -> None:
        self.device = device
        #: a QuantumLayer on this backend runs the engine as a native torch autograd function
        #: (:class:`~qhqcnn.engine.ExactTorchLayer`: one co-state per sample in backward, faster
        #: from ~8 qubits) instead of EstimatorQNN + TorchConnector (the default, which the
        #: study's numbers were made with; values and gradients agree to float rounding).
        self.native = bool(native)

    def _primitives(
        self, prepared: PreparedCircuit
    ) -> tuple[BaseEstimatorV2, BaseEstimatorGradient]:
        from qhqcnn.engine import FastEstimator, FastEstimatorGradient

        return FastEstimator(device=self.device), FastEstimatorGradient(
            FastEstimator(device=self.device)
        )

    def options(self) -> dict[str, Any]:
        return {"device": self.device, "native": self.native}


class StatevectorBackend(ExecutionBackend):
    """Qiskit's reference path: ``StatevectorEstimator`` + parameter-shift gradients (slow)."""

    name = "statevector"

    def _primitives(
        self, prepared: PreparedCircuit
    ) -> tuple[BaseEstimatorV2, BaseEstimatorGradient]:
        from qiskit.primitives import StatevectorEstimator
        from qiskit_machine_learning.gradients import ParamShiftEstimatorGradient

        return StatevectorEstimator(), ParamShiftEstimatorGradient(StatevectorEstimator())


#: name -> "module:ClassName", imported on first use.
_REGISTRY: dict[str, str] = {
    "exact": "qhqcnn.backends.base:ExactBackend",
    "statevector": "qhqcnn.backends.base:StatevectorBackend",
    "aer": "qhqcnn.noise.backend:AerBackend",
}


def register_backend(name: str, target: str) -> None:
    """Register a backend class given as ``"module:ClassName"`` under ``name``.

    The module is imported on first use, so a backend's optional dependencies cost nothing
    until it is asked for. The class subclasses :class:`ExecutionBackend`.
    """
    _REGISTRY[name] = target


def available_backends() -> list[str]:
    """The names of the registered backends (built by :func:`make_backend`)."""
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
