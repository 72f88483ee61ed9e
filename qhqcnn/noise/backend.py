"""``AerBackend``: noise-aware training and evaluation on qiskit-aer (backend name ``"aer"``).

``prepare()`` transpiles the template ONCE to the ISA of the noise source's device (or of
``target``; else a generic rz/sx/x/cx line for parametric noise, all-to-all when noiseless),
shrinks it to the physical qubits it uses (:mod:`qhqcnn.noise.compact`) and re-indexes the device
noise model to them, so the gates that would run on the device are the gates that are trained and
simulated, on 4–6 instead of 127–156 qubits.

Engines (``engine=``):

* ``"density"``: the vectorized torch density-matrix engine (:mod:`qhqcnn.noise.density`), exact
  noisy values and adjoint gradients for the whole batch (needs :mod:`qhqcnn.engine`); it runs
  on the CPU whatever ``device`` says (4ⁿ-dimensional states of a few qubits: no GPU gain);
* ``"aer"``: Aer ``EstimatorV2`` (``method="density_matrix"`` under noise, exact expectations)
  with :class:`~qhqcnn.noise.gradient.BroadcastParamShiftGradient` (one PUB per backward);
* ``"auto"`` (default): ``"density"`` when available, else ``"aer"``.

``device="cuda"`` makes the ``"aer"`` engine simulate on the GPU when the installed qiskit-aer
has one (qiskit-aer-gpu), else on the CPU.

``shots=N`` samples every expectation value with N shots (binomial, :mod:`.sampling`) in the
forward pass and in the parameter-shift evaluations of the gradient, as a device would.
``readout=True`` also applies the model's readout errors to the observables (:mod:`.readout`);
by default they are ignored, exactly like Aer's estimator does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from functools import lru_cache
from typing import Any

from qiskit.primitives import BaseEstimatorV2
from qiskit_aer.noise import NoiseModel
from qiskit_machine_learning.gradients import BaseEstimatorGradient

from qhqcnn.backends.base import ExecutionBackend, PreparedCircuit
from qhqcnn.backends.transpile import transpile_template
from qhqcnn.circuits.template import CircuitTemplate
from qhqcnn.errors import BackendError, ConfigError
from qhqcnn.noise.compact import compact_circuit
from qhqcnn.noise.gradient import BroadcastParamShiftGradient
from qhqcnn.noise.models import PARAMETRIC_BASIS, NoiseSource, load_noise, remap_noise_model
from qhqcnn.noise.readout import apply_readout_error, readout_flip_table
from qhqcnn.noise.sampling import ShotEstimator

ENGINES = ("auto", "density", "aer")


def density_engine_available() -> bool:
    """Whether the torch density-matrix engine (and the exact engine it builds on) imports."""
    try:
        import qhqcnn.noise.density  # noqa: F401
    except ImportError:
        return False
    return True


@lru_cache(maxsize=16)
def generic_target(num_qubits: int, seed: int | None = None, *, line: bool = True):
    """A noiseless target with basis rz, sx, x, cx (IBM Falcon): a line, or all-to-all."""
    from qiskit.providers.fake_provider import GenericBackendV2
    from qiskit.transpiler import CouplingMap

    coupling = None
    if num_qubits > 1:
        coupling = CouplingMap.from_line(num_qubits) if line else CouplingMap.from_full(num_qubits)
    return GenericBackendV2(
        num_qubits,
        basis_gates=list(PARAMETRIC_BASIS),
        coupling_map=coupling,
        seed=seed,
        noise_info=False,
    )


#: (template structure, target, options) -> (target, PreparedCircuit): a process-wide cache, so
#: training then evaluating (or several backends on one device) transpile only once.
_TRANSPILED: dict[tuple, tuple[Any, PreparedCircuit]] = {}


def _transpile_once(
    template: CircuitTemplate,
    target,
    level: int,
    layout: Sequence[int] | None,
    seed: int,
) -> PreparedCircuit:
    from qiskit_machine_learning.utils import circuit_cache_key

    key = (
        circuit_cache_key(template.circuit),
        # Parameter identities: another instance of the same template has equal names but
        # distinct Parameter objects, and EstimatorQNN binds by object.
        tuple(p.uuid for p in template.circuit.parameters),
        tuple((tuple(o.paulis.to_labels()), o.coeffs.tobytes()) for o in template.observables),
        id(target),
        level,
        None if layout is None else tuple(layout),
        seed,
    )
    hit = _TRANSPILED.get(key)
    if hit is None or hit[0] is not target:
        prepared = transpile_template(
            template, target, optimization_level=level, initial_layout=layout, seed_transpiler=seed
        )
        hit = _TRANSPILED[key] = (target, prepared)
    return hit[1]


def aer_device(requested: str) -> str:
    """Aer's simulation device for the requested torch device: ``"GPU"`` for ``cuda`` when this
    qiskit-aer build has one (the qiskit-aer-gpu package), else ``"CPU"``."""
    if requested != "cuda":
        return "CPU"
    from qiskit_aer import AerSimulator

    return "GPU" if "GPU" in AerSimulator().available_devices() else "CPU"


class AerBackend(ExecutionBackend):
    """Noisy (or noiseless) simulation of the device's ISA circuit on its active qubits."""

    name = "aer"

    def __init__(
        self,
        noise: str | None = None,
        shots: int | None = None,
        optimization_level: int = 2,
        initial_layout: Sequence[int] | None = None,
        seed: int = 1234,
        engine: str = "auto",
        target: str | None = None,
        readout: bool = False,
        device: str = "cpu",
    ) -> None:
        if shots is not None and (int(shots) != shots or shots < 1):
            raise ConfigError(f"shots must be a positive integer or None, got {shots!r}")
        if optimization_level not in (0, 1, 2, 3):
            raise ConfigError(f"optimization_level must be 0-3, got {optimization_level!r}")
        if engine not in ENGINES:
            raise ConfigError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
        if engine == "density" and not density_engine_available():
            raise BackendError("the density-matrix engine is unavailable (qhqcnn.engine missing)")
        self.source: NoiseSource = load_noise(noise)
        self.shots = None if shots is None else int(shots)
        self.optimization_level = optimization_level
        self.initial_layout = list(initial_layout) if initial_layout is not None else None
        self.seed = seed
        self.engine = (
            engine if engine != "auto" else ("density" if density_engine_available() else "aer")
        )
        self.target = target
        self.readout = bool(readout)
        self.device = device

    @property
    def precision(self) -> float:
        return 0.0 if self.shots is None else 1.0 / math.sqrt(self.shots)

    # -- circuit -------------------------------------------------------------------------------
    def _target_backend(self, template: CircuitTemplate):
        if self.target is not None:
            from qhqcnn.backends.devices import get_backend

            return get_backend(self.target)
        if self.source.backend is not None:
            return self.source.backend
        # Parametric noise: a line, so routing adds the SWAPs a device would. Noiseless: all-to-all
        # (no SWAPs), still translated because Aer 0.18 binds parameterized controlled gates
        # (cp, crx, ...) wrongly (qiskit-aer#2403) while rz/sx/x/cx circuits are exact.
        return generic_target(template.num_qubits, self.seed, line=self.source.kind != "ideal")

    def _prepare_circuit(self, template: CircuitTemplate) -> PreparedCircuit:
        """Transpile once, shrink to the active qubits, re-index noise (and readout) to them."""
        full = _transpile_once(
            template,
            self._target_backend(template),
            self.optimization_level,
            self.initial_layout,
            self.seed,
        )
        compact = compact_circuit(full)
        if any(i.operation.name == "delay" for i in compact.prepared.circuit.data):
            raise BackendError("circuits with delays are not supported (no relaxation on delays)")
        noise_model = (
            remap_noise_model(self.source.model, compact.mapping)
            if self.source.model is not None
            else None
        )
        prepared = compact.prepared
        if self.readout:
            flips = readout_flip_table(noise_model, prepared.circuit.num_qubits)
            prepared = replace(
                prepared,
                observables=tuple(apply_readout_error(o, flips) for o in prepared.observables),
            )
        info = {
            **prepared.info,
            "noise": self.source.name,
            "noise_kind": self.source.kind,
            "engine": self.engine,
            "shots": self.shots,
            "readout_error_applied": self.readout,
        }
        return replace(prepared, info=info, noise_model=noise_model, device_circuit=full)

    def _primitives(
        self, prepared: PreparedCircuit
    ) -> tuple[BaseEstimatorV2, BaseEstimatorGradient]:
        # One estimator instance: with shots, the forward pass and the gradient draw from one
        # random stream.
        exact = self.exact_estimator(prepared.noise_model)
        estimator = exact if self.shots is None else ShotEstimator(exact, self.shots, self.seed)
        if self.engine == "density" and self.shots is None:
            from qhqcnn.noise.density import DensityMatrixGradient

            return estimator, DensityMatrixGradient(estimator)
        return estimator, BroadcastParamShiftGradient(estimator)

    # -- primitives ----------------------------------------------------------------------------
    def exact_estimator(self, noise_model: NoiseModel | None) -> BaseEstimatorV2:
        """Exact (noisy) expectation values under ``noise_model``, no shot noise."""
        if self.engine == "density":
            from qhqcnn.noise.density import DensityMatrixEstimator

            return DensityMatrixEstimator(noise_model)
        from qiskit_aer.primitives import EstimatorV2

        backend_options: dict[str, Any] = {"method": "statevector"}
        if noise_model is not None:
            backend_options = {"method": "density_matrix", "noise_model": noise_model}
        backend_options["device"] = aer_device(self.device)
        return EstimatorV2(
            options={
                "default_precision": 0.0,
                "backend_options": backend_options,
                "run_options": {"seed_simulator": self.seed},
            }
        )

    def options(self) -> dict[str, Any]:
        return {
            "noise": None if self.source.kind == "ideal" else self.source.name,
            "shots": self.shots,
            "optimization_level": self.optimization_level,
            "initial_layout": self.initial_layout,
            "seed": self.seed,
            "engine": self.engine,
            "target": self.target,
            "readout": self.readout,
            "device": self.device,
        }
