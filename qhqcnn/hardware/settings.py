"""Execution settings of a hardware job: shots, mitigation, primitive choice and chunk sizes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from qhqcnn.errors import ConfigError

#: Where job records are written unless ``--jobs-dir`` says otherwise.
DEFAULT_JOBS_DIR = "hardware_jobs"

#: ``--mitigation`` choices; several may be combined (``trex,zne``), ``none`` stands alone.
MITIGATIONS = ("none", "trex", "zne", "twirling", "dd")
#: ``auto`` picks the executor estimator where it exists and fits (see primitives.py).
PRIMITIVES = ("auto", "executor", "legacy")
#: The dynamical-decoupling sequence used for ``--mitigation dd``.
DD_SEQUENCE = "XY4"
#: ``--synthesis`` choices (see qhqcnn.backends.synthesis).
SYNTHESES = ("none", "aqc")
#: ``--synthesis-choice``: how an accepted synthesis is weighed against the searched circuit.
SYNTHESIS_CHOICES = ("noisy", "esp", "always")
#: ``--calibration`` choices (see qhqcnn.hardware.calibration).
CALIBRATIONS = ("none", "affine")


def parse_mitigation(text: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """``"trex,zne"`` / ``["trex", "zne"]`` → ``("trex", "zne")`` (validated, de-duplicated)."""
    if text is None:
        return ("trex",)
    items = text.split(",") if isinstance(text, str) else [p for t in text for p in t.split(",")]
    names = tuple(dict.fromkeys(item.strip().lower() for item in items if item.strip()))
    unknown = [name for name in names if name not in MITIGATIONS]
    if unknown:
        raise ConfigError(
            f"unknown mitigation {', '.join(unknown)}; choose from {', '.join(MITIGATIONS)}"
        )
    if not names:
        return ("none",)
    if "none" in names and len(names) > 1:
        raise ConfigError("--mitigation none cannot be combined with other techniques")
    return names


@dataclass(frozen=True)
class ExecutionSettings:
    """Everything that decides how the circuits run (saved in the job manifest)."""

    shots: int = 4096
    mitigation: tuple[str, ...] = ("trex",)
    #: ``None``: level 0 plus exactly the techniques in ``mitigation``; 0–2: Runtime's level
    #: defaults, with ``mitigation`` switched on on top.
    resilience_level: int | None = None
    primitive: str = "auto"
    max_params_per_pub: int = 500
    max_pubs_per_job: int = 1
    optimization_level: int = 3
    seed_transpiler: int = 1234
    #: Seed of local (fake-backend) simulations; real devices ignore it.
    seed_simulator: int | None = None
    #: Pick the best of several exact transpilations scored by the device's calibrated errors
    #: (qhqcnn.backends.search); ``search_seeds``/``search_orders`` ``None``: per-device defaults.
    transpile_search: bool = True
    search_seeds: int | None = None
    search_orders: int | None = None
    #: Approximate synthesis (< 1), kept only within ``max_approx_error`` of the exact values.
    approximation_degree: float | None = None
    max_approx_error: float = 1e-3
    #: ``aqc``: the fixed (weight) part of the trained circuit compiled into a line CNOT network
    #: of ``synthesis_cnots`` CNOTs (``None``: the fewest that meet ``max_approx_error``), kept
    #: only when its stated output bound is within ``max_approx_error`` (qhqcnn.backends.synthesis).
    synthesis: str = "none"
    synthesis_cnots: int | None = None
    #: An accepted synthesis runs only when it scores better than the searched circuit:
    #: ``noisy`` (predicted output error under the device's noise model), ``esp`` (estimated
    #: success probability, the search's score), or ``always`` (no comparison).
    synthesis_choice: str = "noisy"
    #: Calibrated readout: ``none``, or ``affine`` (per-output scale and shift fitted on
    #: ``calibration_images`` training images run in the same Batch; see calibration.py).
    calibration: str = "none"
    calibration_images: int = 32

    def __post_init__(self) -> None:
        object.__setattr__(self, "mitigation", parse_mitigation(list(self.mitigation)))
        checks = [
            (self.shots >= 1, f"shots must be >= 1, got {self.shots}"),
            (
                self.resilience_level in (None, 0, 1, 2),
                f"resilience level must be 0, 1 or 2, got {self.resilience_level}",
            ),
            (self.primitive in PRIMITIVES, f"primitive must be one of {', '.join(PRIMITIVES)}"),
            (self.max_params_per_pub >= 1, "max parameter sets per PUB must be >= 1"),
            (self.max_pubs_per_job >= 1, "max PUBs per job must be >= 1"),
            (self.optimization_level in (0, 1, 2, 3), "optimization level must be 0-3"),
            (self.calibration in CALIBRATIONS, f"calibration must be one of {CALIBRATIONS}"),
            (self.calibration_images >= 2, "calibration needs at least 2 images"),
            (self.synthesis in SYNTHESES, f"synthesis must be one of {SYNTHESES}"),
            (
                self.synthesis_choice in SYNTHESIS_CHOICES,
                f"synthesis choice must be one of {SYNTHESIS_CHOICES}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    def estimator_options(self, job_tags: list[str] | None = None) -> dict[str, Any]:
        """Options accepted by both the executor and the legacy Runtime ``EstimatorV2``."""
        options: dict[str, Any] = {
            "default_shots": self.shots,
            "resilience_level": 0 if self.resilience_level is None else self.resilience_level,
        }
        chosen = set(self.mitigation)
        resilience: dict[str, Any] = {}
        if "trex" in chosen:
            resilience["measure_mitigation"] = True
        if "zne" in chosen:
            resilience["zne_mitigation"] = True
        if resilience:
            options["resilience"] = resilience
        if "twirling" in chosen:
            options["twirling"] = {"enable_gates": True, "enable_measure": True}
        if "dd" in chosen:
            options["dynamical_decoupling"] = {"enable": True, "sequence_type": DD_SEQUENCE}
        if self.seed_simulator is not None:
            options["simulator"] = {"seed_simulator": self.seed_simulator}
        if job_tags:
            options["environment"] = {"job_tags": list(job_tags)}
        return options

    def search(self) -> dict[str, Any] | None:
        """The ``search=`` option of ``transpile_template`` (``None``: one preset run)."""
        if not self.transpile_search:
            return None
        return {
            "seeds": self.search_seeds,
            "orders": self.search_orders,
            "optimization_level": self.optimization_level,
            "approximation_degree": self.approximation_degree,
            "max_approx_error": self.max_approx_error,
            "seed": self.seed_transpiler,
        }

    def synthesis_options(self):
        """The options of :func:`qhqcnn.backends.synthesis.synthesize` (``None``: off)."""
        if self.synthesis == "none":
            return None
        from qhqcnn.backends.synthesis import SynthesisOptions

        return SynthesisOptions(
            method=self.synthesis, cnots=self.synthesis_cnots, max_error=self.max_approx_error
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mitigation"] = list(self.mitigation)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExecutionSettings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown execution settings: {', '.join(unknown)}")
        values = dict(data)
        # Records written before the transpiler search: one preset transpilation ran.
        values.setdefault("transpile_search", False)
        # Records written before the synthesis was scored: an accepted synthesis always ran.
        values.setdefault("synthesis_choice", "always")
        if "mitigation" in values:
            values["mitigation"] = tuple(values["mitigation"])
        return cls(**values)
