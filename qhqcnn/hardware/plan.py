"""What a hardware job sends: the ISA circuit (transpiled once), PUBs, jobs and QPU usage.

Every image is one parameter set (HQCNN, QCNN) or ``rows_per_image`` of them (quanv: one per
patch and channel). Parameter sets are cut into PUBs of at most ``max_params_per_pub``, rounded
down to whole images (at least one image), and PUBs into jobs (chunks) of at most
``max_pubs_per_job``: a chunk is the unit that is submitted, saved and, if needed, submitted
again, and always holds whole images.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from qhqcnn.backends.base import PreparedCircuit
from qhqcnn.backends.devices import get_backend, is_fake_name, runtime_service
from qhqcnn.backends.transpile import transpile_template
from qhqcnn.circuits.template import CircuitTemplate
from qhqcnn.hardware.calibration import CALIBRATION_SPLIT
from qhqcnn.hardware.features import RunInputs, load_run_inputs, parameter_values
from qhqcnn.hardware.primitives import (
    applied_mitigation,
    choose_primitive,
    finalized_options,
    is_local_backend,
    make_estimator,
)
from qhqcnn.hardware.settings import ExecutionSettings
from qhqcnn.training.rundir import RunDir

#: Assumed per-job overhead and repetition delay of the rough QPU-usage estimate.
JOB_OVERHEAD_S = 2.0
DEFAULT_REP_DELAY_S = 250e-6
#: ZNE's default gate-folding noise factors (1, 3, 5): 3 executions, 9× the circuit time.
ZNE_EXECUTIONS, ZNE_TIME_FACTOR = 3, 9


@dataclass
class HardwarePlan:
    """A fully prepared hardware job that has not been submitted."""

    inputs: RunInputs
    backend: Any
    settings: ExecutionSettings
    template: CircuitTemplate
    prepared: PreparedCircuit
    values: np.ndarray
    primitive: str
    primitive_reason: str
    options: dict[str, Any]
    applied: dict[str, Any]
    chunks: list[dict[str, Any]]
    usage: dict[str, Any]
    service: Any = None
    warnings: list[str] = field(default_factory=list)
    #: Training images run in the same Batch to fit the calibrated readout (or ``None``).
    calibration: RunInputs | None = None

    @property
    def backend_name(self) -> str:
        return self.backend.name

    @property
    def local(self) -> bool:
        return is_local_backend(self.backend)

    @property
    def n_images(self) -> int:
        return self.inputs.n_images

    @property
    def n_rows(self) -> int:
        """Circuit parameter sets: images × ``inputs.rows_per_image`` (+ calibration rows)."""
        return int(self.values.shape[0])

    @property
    def n_calibration_rows(self) -> int:
        return 0 if self.calibration is None else int(self.calibration.angles.shape[0])


def make_chunks(
    n: int, max_params_per_pub: int, max_pubs_per_job: int, rows_per_image: int = 1
) -> list[dict[str, Any]]:
    """Chunks (jobs) of PUBs covering parameter sets ``0 … n−1`` in order, each PUB holding
    whole images of ``rows_per_image`` parameter sets."""
    size = max(1, max_params_per_pub // rows_per_image) * rows_per_image
    pubs = [(s, min(n, s + size)) for s in range(0, n, size)]
    chunks = []
    for index, first in enumerate(range(0, len(pubs), max_pubs_per_job)):
        group = pubs[first : first + max_pubs_per_job]
        chunks.append(
            {
                "index": index,
                "start": group[0][0],
                "stop": group[-1][1],
                "pubs": [list(p) for p in group],
            }
        )
    return chunks


def add_calibration_pubs(
    chunks: list[dict[str, Any]], start: int, stop: int, max_params_per_pub: int
) -> None:
    """Calibration rows ``[start, stop)`` as extra PUB(s) of the last job: no extra job, and
    they run in the same Batch, close in time to the evaluated images."""
    last = chunks[-1]
    for first in range(start, stop, max_params_per_pub):
        last["pubs"].append([first, min(stop, first + max_params_per_pub)])
    last["stop"] = stop


def measurement_bases(observables) -> int:
    """Qubit-wise-commuting groups of all observables' Pauli terms: circuits per parameter set."""
    from qiskit.quantum_info import PauliList

    paulis = PauliList([p for obs in observables for p in obs.paulis])
    return len(paulis.group_qubit_wise_commuting())


def circuit_duration(circuit, backend) -> float | None:
    """Scheduled duration of the ISA circuit in seconds (``None`` if the target has no timing)."""
    try:
        return float(circuit.estimate_duration(backend.target, unit="s"))
    except Exception:  # noqa: BLE001 - missing durations, old qiskit
        return None


def rep_delay(backend) -> float:
    try:
        return float(backend.configuration().default_rep_delay)
    except Exception:  # noqa: BLE001 - BackendV2 without a configuration
        return DEFAULT_REP_DELAY_S


def estimate_usage(
    prepared: PreparedCircuit, backend, n_params: int, n_jobs: int, settings: ExecutionSettings
) -> dict[str, Any]:
    """A rough QPU-time estimate (the service's own estimate is saved after submission)."""
    bases = measurement_bases(prepared.observables)
    duration = circuit_duration(prepared.circuit, backend)
    zne = "zne" in settings.mitigation or (settings.resilience_level or 0) >= 2
    executions = n_params * bases * (ZNE_EXECUTIONS if zne else 1)
    shots = executions * settings.shots
    circuit_time = (duration or 0.0) * (ZNE_TIME_FACTOR / ZNE_EXECUTIONS if zne else 1.0)
    seconds = shots * (circuit_time + rep_delay(backend)) + n_jobs * JOB_OVERHEAD_S
    return {
        "measurement_bases": bases,
        "circuit_executions": executions,
        "total_shots": shots,
        "circuit_duration_s": duration,
        "rep_delay_s": rep_delay(backend),
        "estimated_qpu_seconds": round(seconds, 1),
        "assumptions": (
            f"shots × (circuit duration + repetition delay) + {JOB_OVERHEAD_S:.0f} s per job"
            + (", ZNE noise factors 1, 3, 5" if zne else "")
            + "; TREX calibration and twirling overheads not included"
        ),
    }


#: Mitigation choices whose QPU time ``hardware plan`` estimates side by side.
PLAN_CHOICES = ("none", "trex", "trex,dd", "twirling", "trex,twirling", "zne", "trex,zne")
#: TREX's readout-calibration circuits, per job and measurement basis (rough assumption).
TREX_CALIBRATION_SHOTS = 32 * 128


def usage_by_choice(
    prepared: PreparedCircuit,
    backend,
    plan_rows: int,
    calibration_rows: int,
    n_jobs: int,
    settings: ExecutionSettings,
) -> list[dict[str, Any]]:
    """The rough QPU estimate of every mitigation choice, without and with the calibration."""
    rows = []
    bases = measurement_bases(prepared.observables)
    for choice in PLAN_CHOICES:
        for calibrated in (False, True):
            variant = replace(settings, mitigation=tuple(choice.split(",")))
            n = plan_rows + (calibration_rows if calibrated else 0)
            usage = estimate_usage(prepared, backend, n, n_jobs, variant)
            seconds = usage["estimated_qpu_seconds"]
            if "trex" in variant.mitigation:
                seconds += n_jobs * bases * TREX_CALIBRATION_SHOTS * rep_delay(backend)
            rows.append(
                {
                    "mitigation": choice.replace(",", "+"),
                    "calibration": calibrated,
                    "total_shots": usage["total_shots"],
                    "estimated_qpu_seconds": round(seconds, 1),
                }
            )
    return rows


def format_choices(rows: list[dict[str, Any]]) -> list[str]:
    """Two columns per mitigation choice: raw readout, calibrated readout."""
    by = {(r["mitigation"], r["calibration"]): r for r in rows}
    lines = ["QPU time per choice (rough estimate, s; nothing is sent):"]
    lines.append(f"  {'mitigation':<16}{'raw readout':>14}{'+ calibration':>16}")
    for choice in dict.fromkeys(r["mitigation"] for r in rows):
        raw, cal = by[(choice, False)], by[(choice, True)]
        lines.append(
            f"  {choice:<16}{raw['estimated_qpu_seconds']:>12.1f} s"
            f"{cal['estimated_qpu_seconds']:>14.1f} s"
        )
    return lines


def synthesized_template(
    template: CircuitTemplate, weights: np.ndarray, settings: ExecutionSettings
) -> tuple[CircuitTemplate, dict[str, Any] | None]:
    """The template the device runs and the synthesis record (``None``: synthesis off).

    With ``settings.synthesis`` on, everything after the encoding is compiled at the trained
    ``weights`` (qhqcnn.backends.synthesis): the device template's only parameters are the
    input angles. A rejected synthesis (bound above ``max_approx_error``) keeps ``template``.
    The exact and noisy references of ``hardware report`` always use ``template`` itself.
    """
    options = settings.synthesis_options()
    if options is None:
        return template, None
    from qhqcnn.backends.synthesis import synthesize

    return synthesize(template, weights, options)


#: Training images the synthesized and the searched circuit are scored on (at least).
SYNTHESIS_SCORE_IMAGES = 16


def transpile_with(settings: ExecutionSettings, template: CircuitTemplate, backend: Any):
    """``template`` transpiled for ``backend`` as ``settings`` ask (level, seed, search)."""
    return transpile_template(
        template,
        backend,
        optimization_level=settings.optimization_level,
        seed_transpiler=settings.seed_transpiler,
        search=settings.search(),
    )


def weigh_synthesis(
    run_dir, data_dir, template, weights, device_template, prepared, backend, settings, record
) -> tuple[PreparedCircuit, CircuitTemplate, dict[str, Any]]:
    """The synthesized circuit or the best searched one, whichever scores better.

    Both are scored on the first training images (never test images; as many as the
    calibration uses, at least ``SYNTHESIS_SCORE_IMAGES``) by
    :func:`qhqcnn.backends.synthesis.candidate_score`; ``settings.synthesis_choice`` says by
    what (``noisy``: predicted output error, ``esp``: the search's success probability,
    ``always``: no comparison). The record gets both candidates' facts and the choice.
    """
    from qhqcnn.backends.search import template_values
    from qhqcnn.backends.synthesis import candidate_score, choose

    images = load_run_inputs(
        run_dir,
        CALIBRATION_SPLIT,
        limit=max(SYNTHESIS_SCORE_IMAGES, settings.calibration_images),
        data_dir=data_dir,
    )
    rows = np.hstack([images.angles, np.tile(weights, (len(images.angles), 1))])
    names = [p.name for p in template.input_params] + [p.name for p in template.weight_params]
    exact = template_values(template, rows)
    facts = {
        "synthesized": candidate_score(
            prepared, backend, device_template.observables, rows, names, exact
        )
    }
    searched = None
    if settings.synthesis_choice != "always":
        searched = transpile_with(settings, template, backend)
        facts["searched"] = candidate_score(
            searched, backend, template.observables, rows, names, exact
        )
    choice = choose(facts.get("searched", {}), facts["synthesized"], settings.synthesis_choice)
    record = {**record, "choice": {**choice, "scored_on": f"{len(rows)} {CALIBRATION_SPLIT} "
                                   "images", "candidates": facts}}  # fmt: skip
    if choice["chosen"] == "searched":
        return searched, template, record
    return prepared, device_template, record


def build_plan(
    run_dir: str | Path,
    backend_name: str,
    settings: ExecutionSettings | None = None,
    *,
    split: str = "test",
    limit: int | None = None,
    offset: int = 0,
    data_dir: str | None = None,
    service: Any = None,
) -> HardwarePlan:
    """Prepare everything a submission needs; sends nothing.

    The backend (and, for real devices, the IBM Quantum account) is resolved first, so missing
    or rejected credentials fail before any data is loaded or circuit transpiled.
    """
    settings = settings or ExecutionSettings()
    RunDir(run_dir).config()  # a clear error for a missing run, before touching the network
    if service is None and not is_fake_name(backend_name):
        service = runtime_service()
    backend = get_backend(backend_name, service=service)
    primitive, reason = choose_primitive(settings.primitive, backend)
    inputs = load_run_inputs(run_dir, split, limit=limit, offset=offset, data_dir=data_dir)
    template = inputs.spec.template()
    device_template, synthesis = synthesized_template(template, inputs.weights, settings)
    prepared = transpile_with(settings, device_template, backend)
    if synthesis is not None and synthesis.get("accepted"):
        prepared, device_template, synthesis = weigh_synthesis(
            run_dir, data_dir, template, inputs.weights, device_template, prepared, backend,
            settings, synthesis,
        )  # fmt: skip
    if synthesis is not None:
        prepared.info["synthesis"] = synthesis
    values = parameter_values(
        prepared.circuit,
        device_template.input_params,
        device_template.weight_params,
        inputs.angles,
        inputs.weights,
    )
    calibration = None
    if settings.calibration != "none":
        calibration = load_run_inputs(
            run_dir, CALIBRATION_SPLIT, limit=settings.calibration_images, data_dir=data_dir
        )
        calibration_values = parameter_values(
            prepared.circuit,
            device_template.input_params,
            device_template.weight_params,
            calibration.angles,
            inputs.weights,
        )
        values = np.concatenate([values, calibration_values])
    options = settings.estimator_options()
    estimator = make_estimator(primitive, backend, options)
    applied = applied_mitigation(
        primitive, is_local_backend(backend), options, finalized_options(estimator)
    )
    chunks = make_chunks(
        len(inputs.angles),
        settings.max_params_per_pub,
        settings.max_pubs_per_job,
        inputs.rows_per_image,
    )
    if calibration is not None:
        add_calibration_pubs(chunks, len(inputs.angles), len(values), settings.max_params_per_pub)
    usage = estimate_usage(prepared, backend, len(values), len(chunks), settings)
    n_calibration = 0 if calibration is None else len(calibration.angles)
    usage["by_choice"] = usage_by_choice(
        prepared, backend, len(values) - n_calibration, n_calibration, len(chunks), settings
    )
    return HardwarePlan(
        inputs=inputs,
        backend=backend,
        settings=settings,
        template=template,
        prepared=prepared,
        values=values,
        primitive=primitive,
        primitive_reason=reason,
        options=options,
        applied=applied,
        chunks=chunks,
        usage=usage,
        service=service,
        calibration=calibration,
    )


def _techniques_text(applied: dict[str, Any]) -> str:
    on = [name for name, enabled in applied["techniques"].items() if enabled]
    return ", ".join(on) if on else "none"


def _synthesis_lines(record: dict[str, Any]) -> list[str]:
    if not record.get("accepted"):
        tried = ", ".join(f"{t['cnots']} CNOTs: {t['output_bound']:.1e}" for t in record["tried"])
        return [f"synthesis    {record['method']} rejected (output bounds {tried} > "
                f"{record['options']['max_error']:g}); the template runs"]  # fmt: skip
    lines = [
        f"synthesis    {record['method']}: fixed part (trained weights) as {record['cnots']} "
        f"CNOTs on a line; |Δ⟨O⟩| ≤ {record['output_bound']:.1e} for every input (stated "
        f"bound; ≤ {record['options']['max_error']:g} required), "
        f"{record['max_abs_deviation_random_inputs']:.1e} measured at random inputs"
    ]
    choice = record.get("choice")
    if choice:
        lines.append(
            f"  candidates scored on {choice['scored_on']} (predicted MAE: device noise model, "
            "no shots, no readout error):"
        )
        for name, c in choice["candidates"].items():
            duration = "?" if c["duration_s"] is None else f"{c['duration_s'] * 1e6:.1f} µs"
            lines.append(
                f"  {name:<12} 2q {c['two_qubit_gates']}, sx {c['sx']}, depth {c['depth']}, "
                f"duration {duration}, ESP {c['esp']:.3f} (with idle {c['esp_with_idle']:.3f}),"
                + (
                    f" predicted MAE {c['predicted_mae']:.4f}, scale {c['predicted_scale']:.3f}"
                    if c["predicted_mae"] is not None
                    else " no noise-model prediction"
                )
            )
        lines.append(f"  runs         the {choice['chosen']} circuit ({choice['reason']})")
    return lines


def format_plan(plan: HardwarePlan) -> str:
    """A human-readable summary of what would be sent."""
    info, inputs, settings = plan.prepared.info, plan.inputs, plan.settings
    n_params = plan.prepared.circuit.num_parameters
    mode = "local testing mode (fake backend)" if plan.local else "IBM Quantum (real device)"
    ops = ", ".join(f"{k} {v}" for k, v in info["gate_counts"].items() if k != "barrier")
    pub_lines = [
        f"  job {c['index']}: "
        + "; ".join(
            f"PUB(circuit, observables (1, {len(plan.prepared.observables)}), "
            f"parameter values ({stop - start}, 1, {n_params})) -> evs ({stop - start}, "
            f"{len(plan.prepared.observables)})"
            for start, stop in c["pubs"]
        )
        for c in plan.chunks
    ]
    if len(pub_lines) > 6:
        pub_lines = pub_lines[:3] + [f"  … {len(pub_lines) - 5} more …"] + pub_lines[-2:]
    usage = plan.usage
    duration = usage["circuit_duration_s"]
    lines = [
        f"run          {inputs.run_dir} ({inputs.dataset}, checkpoint epoch "
        f"{inputs.checkpoint_epoch})",
        f"images       {plan.n_images} of the {inputs.split} split (indices "
        f"{int(inputs.indices[0])}–{int(inputs.indices[-1])}); features computed locally"
        + (
            f"; {inputs.rows_per_image} parameter sets (patches × channels) per image, "
            f"{plan.n_rows:,} in all"
            if inputs.rows_per_image > 1
            else ""
        ),
        f"backend      {plan.backend_name}: {plan.backend.num_qubits} qubits, {mode}",
        f"circuit      {plan.template.num_qubits} qubits on physical {info['layout']}; depth "
        f"{info['depth']}; {info['two_qubit_gates']} two-qubit gates; {ops}",
        *(
            [
                f"transpile    best of {info['search']['candidates']} exact candidates "
                f"(optimization level {info['optimization_level']}; two-qubit gates "
                f"{info['search']['two_qubit_gates_range'][0]}–"
                f"{info['search']['two_qubit_gates_range'][1]}), scored by the device's "
                f"calibrated errors: ESP {info['search']['chosen']['esp']:.3f}"
            ]
            if "search" in info
            else []
        ),
        *(
            [
                f"calibration  {settings.calibration}: {plan.calibration.n_images} "
                f"{plan.calibration.split} images ({plan.n_calibration_rows} parameter sets) in "
                "the last job; per-output scale and shift fitted at report time"
            ]
            if plan.calibration is not None
            else []
        ),
        *(_synthesis_lines(info["synthesis"]) if "synthesis" in info else []),
        f"parameters   {n_params} per set ({plan.template.num_inputs} input angles + "
        + (
            f"{plan.template.num_weights} trained weights compiled into the network)"
            if plan.prepared.circuit.num_parameters == plan.template.num_inputs
            and info.get("synthesis", {}).get("accepted")
            else f"{plan.template.num_weights} trained weights bound)"
        ),
        f"observables  {len(plan.prepared.observables)} ({', '.join(plan.template.output_names)})"
        f" mapped to the layout; {usage['measurement_bases']} measurement bases",
        f"primitive    {plan.primitive} estimator ({plan.primitive_reason})",
        f"options      shots {settings.shots}; mitigation requested: "
        f"{', '.join(settings.mitigation)}; resilience level "
        f"{plan.options['resilience_level']}",
        f"applied      {_techniques_text(plan.applied)} — {plan.applied['where']}; "
        f"{plan.applied['note']}",
        f"jobs         {len(plan.chunks)} job(s) in one Batch, "
        f"{sum(len(c['pubs']) for c in plan.chunks)} PUB(s) (≤ {settings.max_params_per_pub} "
        f"parameter sets per PUB, ≤ {settings.max_pubs_per_job} PUB(s) per job)",
        *pub_lines,
        f"usage        ≈ {usage['estimated_qpu_seconds']} s QPU (rough: "
        f"{usage['total_shots']:,} shots, circuit "
        f"{'unknown' if duration is None else f'{duration * 1e6:.1f} µs'}; "
        f"{usage['assumptions']})",
        *(format_choices(usage["by_choice"]) if "by_choice" in usage else []),
        "nothing was submitted",
    ]
    return "\n".join(lines)
