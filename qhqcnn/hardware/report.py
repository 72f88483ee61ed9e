"""Hardware vs exact vs noisy-simulation predictions on the same images (Markdown + PNG).

The three sources share the classical features of every image (computed once, stored in the
job record) and the trained classical layer after the circuit; they differ only in how the
circuit's expectation values were obtained:

* ``exact``: the ideal circuit on the exact engine (``qhqcnn.backends.base`` ``"exact"``, else the
  slower ``"statevector"`` reference);
* ``noisy``: the ``"aer"`` backend with the device's noise model on the same physical qubits;
* ``hardware``: the values the job record's Runtime jobs returned.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from qhqcnn.backends.base import make_backend
from qhqcnn.backends.devices import is_fake_name, normalize_fake_name
from qhqcnn.config import ModelSpec
from qhqcnn.errors import QhqcnnError
from qhqcnn.hardware.features import build_classifier, score_outputs
from qhqcnn.hardware.manifest import (
    JobRecord,
    load_record,
    now,
    write_json,
    write_text,
)
from qhqcnn.reporting.plots import new_figure, save_figure, styled

REPORT_MD, REPORT_JSON, REPORT_PNG = "report.md", "report.json", "report.png"
SOURCE_LABELS = {
    "exact": "exact (ideal circuit)",
    "noisy": "noisy simulation",
    "hardware": "hardware",
}
COLORS = {"exact": "#2ca02c", "noisy": "#ff7f0e", "hardware": "#1f77b4"}


def hardware_outputs(record: JobRecord, allow_partial: bool = False) -> dict[str, np.ndarray]:
    """Saved expectation values of every chunk, with the positions of the parameter sets (rows)
    and of the images they cover."""
    positions, images, evs, stds, missing = [], [], [], [], []
    for chunk in record.chunks:
        result = record.read_result(chunk["index"])
        if result is None:
            missing.append(chunk["index"])
            continue
        values = np.asarray(result["evs"], dtype=float)
        positions.append(np.arange(chunk["start"], chunk["stop"]))
        images.append(np.arange(*record.image_span(chunk)))
        evs.append(values)
        stds.append(np.asarray(result.get("stds", np.full_like(values, np.nan)), dtype=float))
    if missing and (not allow_partial or not evs):
        hint = " (or report on what exists with --partial)" if evs else ""
        raise QhqcnnError(
            f"chunk(s) {missing} of {record.path} have no results yet; run "
            f"`qhqcnn hardware retrieve {record.path}` first{hint}"
        )
    return {
        "positions": np.concatenate(positions),
        "image_positions": np.concatenate(images),
        "evs": np.concatenate(evs),
        "stds": np.concatenate(stds),
        "missing_chunks": np.asarray(missing, dtype=int),
    }


def circuit_outputs(
    backend_name: str, options: dict[str, Any], spec: ModelSpec, angles, weights
) -> tuple[np.ndarray, dict[str, Any]]:
    """Expectation values of the trained circuit on a qhqcnn execution backend."""
    from qhqcnn.nn.quantum_layer import QuantumLayer

    backend = make_backend(backend_name, **options)
    layer = QuantumLayer(spec.template(), backend)
    values = np.asarray(layer.qnn.forward(np.asarray(angles), np.asarray(weights)), dtype=float)
    info = {k: v for k, v in layer.prepared.info.items() if k != "gate_counts"}
    return values, {"backend": backend_name, "options": backend.options(), **info}


def exact_outputs(spec: ModelSpec, angles, weights) -> tuple[np.ndarray, dict[str, Any]]:
    """The ideal values: the exact engine, or Qiskit's statevector reference without it."""
    try:
        return circuit_outputs("exact", {}, spec, angles, weights)
    except (ImportError, QhqcnnError):
        return circuit_outputs("statevector", {}, spec, angles, weights)


def noise_source_name(backend_name: str) -> str:
    """The fake device whose noise model stands for ``backend_name`` (``ibm_x`` → ``fake_x``)."""
    if is_fake_name(backend_name):
        return normalize_fake_name(backend_name)
    return "fake_" + backend_name.removeprefix("ibm_")


def noisy_outputs(
    record: JobRecord, spec: ModelSpec, angles, weights, noise: str | None
) -> tuple[np.ndarray | None, dict[str, Any]]:
    """The ``aer`` backend's values with the device noise on the hardware's physical qubits."""
    noise = noise or noise_source_name(record.backend_name)
    settings = record.manifest["settings"]
    trex = any(
        chunk.get("applied", {}).get("trex") for chunk in record.chunks if chunk.get("applied")
    )
    options: dict[str, Any] = {
        "noise": noise,
        "optimization_level": settings["optimization_level"],
        "seed": settings["seed_transpiler"],
        # Readout errors count unless the hardware run mitigated them (TREX).
        "readout": not trex,
    }
    try:
        if noise != record.backend_name:
            # Another device's noise (a real device stood in for by its fake twin): pin the
            # physical qubits. The same fake device transpiles to the identical ISA circuit.
            layout = record.load_circuit().layout
            if layout is not None:
                options["initial_layout"] = list(layout.initial_index_layout(filter_ancillas=True))
        values, info = circuit_outputs("aer", options, spec, angles, weights)
    except Exception as exc:  # noqa: BLE001 - optional: a missing noise model is not fatal
        return None, {"backend": "aer", "options": options, "unavailable": str(exc)}
    transpiled = record.manifest["circuit"]["transpile"]
    info["same_circuit_as_hardware"] = all(
        info.get(key) == transpiled[key] for key in ("layout", "depth", "two_qubit_gates")
    )
    return values, info


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a), np.asarray(b)
    same = a == b if a.ndim == 1 else np.all(a == b, axis=1)
    return float(np.mean(same))


def compare(
    outputs: dict[str, np.ndarray], labels: np.ndarray, classifier, task: str, names: list[str]
) -> dict[str, Any]:
    """ACC/AUC of each source, its expectation errors and prediction agreement vs exact."""
    scored = {k: score_outputs(classifier, v, labels, task) for k, v in outputs.items()}
    exact = outputs["exact"]
    sources: dict[str, Any] = {}
    for key, values in outputs.items():
        error = values - exact
        sources[key] = {
            "label": SOURCE_LABELS[key],
            "acc": scored[key]["acc"],
            "auc": scored[key]["auc"],
            "agreement_with_exact": _agreement(scored[key]["y_pred"], scored["exact"]["y_pred"]),
            "mae_vs_exact": float(np.mean(np.abs(error))),
            "rmse_vs_exact": float(np.sqrt(np.mean(error**2))),
            "max_abs_error_vs_exact": float(np.max(np.abs(error))),
            "per_output_mae_vs_exact": dict(
                zip(names, np.mean(np.abs(error), axis=0).tolist(), strict=True)
            ),
        }
    pairs = {}
    if "noisy" in outputs and "hardware" in outputs:
        pairs["hardware_vs_noisy"] = {
            "agreement": _agreement(scored["hardware"]["y_pred"], scored["noisy"]["y_pred"]),
            "mae": float(np.mean(np.abs(outputs["hardware"] - outputs["noisy"]))),
        }
    return {"sources": sources, "pairs": pairs, "scored": scored}


@styled
def plot_comparison(
    outputs: dict[str, np.ndarray], summary: dict[str, Any], names: list[str], title: str
):
    """Three panels: measured vs exact values, per-output error, ACC/AUC per source."""
    fig = new_figure(14, 4.4)
    ax_scatter, ax_error, ax_score = fig.subplots(1, 3)
    exact = outputs["exact"].ravel()
    for key, marker in (("hardware", "o"), ("noisy", "x")):
        if key in outputs:
            ax_scatter.scatter(
                exact,
                outputs[key].ravel(),
                s=12,
                alpha=0.6,
                marker=marker,
                color=COLORS[key],
                label=SOURCE_LABELS[key],
            )
    ax_scatter.plot([-1, 1], [-1, 1], "k--", linewidth=1, label="ideal (y = x)")
    ax_scatter.set(
        xlim=(-1.05, 1.05),
        ylim=(-1.05, 1.05),
        xlabel="exact expectation value ⟨O⟩",
        ylabel="measured / simulated ⟨O⟩",
        title="Circuit outputs vs exact",
    )
    ticks = np.linspace(-1, 1, 5)
    ax_scatter.set_xticks(ticks)
    ax_scatter.set_yticks(ticks)
    ax_scatter.legend(loc="upper left")

    keys = [k for k in ("noisy", "hardware") if k in outputs]
    x = np.arange(len(names))
    width = 0.8 / max(len(keys), 1)
    for i, key in enumerate(keys):
        per_output = summary["sources"][key]["per_output_mae_vs_exact"]
        ax_error.bar(
            x + (i - (len(keys) - 1) / 2) * width,
            [per_output[n] for n in names],
            width,
            color=COLORS[key],
            label=SOURCE_LABELS[key],
        )
    ax_error.set_xticks(x, names)
    ax_error.set(
        xlabel="circuit output",
        ylabel="mean |⟨O⟩ − ⟨O⟩ exact|",
        title="Expectation error per output",
    )
    ax_error.legend()

    metrics = ("acc", "auc")
    keys = [k for k in ("exact", "noisy", "hardware") if k in outputs]
    width = 0.8 / len(keys)
    for i, key in enumerate(keys):
        values = [summary["sources"][key][m] for m in metrics]
        bars = ax_score.bar(
            np.arange(len(metrics)) + (i - (len(keys) - 1) / 2) * width,
            values,
            width,
            color=COLORS[key],
            label=SOURCE_LABELS[key],
        )
        ax_score.bar_label(bars, fmt="%.3f", fontsize=8, padding=2)
    ax_score.set_xticks(np.arange(len(metrics)), ["ACC", "AUC"])
    ax_score.set_yticks(np.linspace(0, 1, 6))
    ax_score.set(ylim=(0, 1.3), xlabel="metric", ylabel="score", title="Classification")
    ax_score.legend(loc="upper center", ncol=len(keys), fontsize=8)
    fig.suptitle(title)
    return fig


def _applied_text(record: JobRecord) -> str:
    chunks = [c.get("applied") for c in record.chunks if c.get("applied") is not None]
    applied = record.manifest["execution"]["mitigation_applied"]
    if chunks:
        on = sorted({name for techniques in chunks for name, v in techniques.items() if v})
    else:
        on = sorted(name for name, v in applied["techniques"].items() if v)
    return f"{', '.join(on) or 'none'} ({applied['where']}; {applied['note']})"


def format_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown (tables and the figure)."""
    what, sources = report["what_ran"], report["comparison"]["sources"]
    lines = [
        f"# Hardware validation: {report['backend']} — {report['dataset']} "
        f"{report['split']} split ({report['n_images']} images)",
        "",
        f"Run `{report['run_dir']}` (checkpoint epoch {report['checkpoint_epoch']}); job record "
        f"`{report['job_dir']}`; report written {report['created']}.",
        "",
    ]
    if report["local"]:
        lines += [
            '> **Local testing mode.** The "hardware" values come from qiskit-ibm-runtime\'s '
            "local testing mode on a fake backend: an Aer simulation with that device's noise "
            "model, through exactly the code that submits to a real device.",
            "",
        ]
    lines += ["## What ran", "", "| | |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in what.items()]
    lines += [
        "",
        "## Results",
        "",
        "| predictions | ACC | AUC | agreement with exact | ⟨O⟩ MAE vs exact | ⟨O⟩ RMSE vs exact |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for s in sources.values():
        lines.append(
            f"| {s['label']} | {s['acc']:.4f} | {s['auc']:.4f} | "
            f"{s['agreement_with_exact']:.3f} | {s['mae_vs_exact']:.4f} | "
            f"{s['rmse_vs_exact']:.4f} |"
        )
    pair = report["comparison"]["pairs"].get("hardware_vs_noisy")
    if pair:
        lines += [
            "",
            f"Hardware vs noisy simulation: predicted classes agree on {pair['agreement']:.1%} "
            f"of the images; mean |Δ⟨O⟩| = {pair['mae']:.4f}.",
        ]
    noisy = report["references"]["noisy"]
    if "unavailable" in noisy:
        lines += ["", f"Noisy simulation unavailable: {noisy['unavailable']}"]
    names = report["outputs"]
    rows = report.get("rows_per_image", 1)
    over = (
        f"the {report['n_images'] * rows:,} circuit evaluations ({report['n_images']} images × "
        f"{rows} patches and channels)"
        if rows > 1
        else "the images"
    )
    lines += [
        "",
        "## Per-output expectation error",
        "",
        "| output | "
        + " | ".join(sources[k]["label"] for k in sources if k != "exact")
        + " | hardware standard error |",
        "|---|" + "---:|" * (len(sources) - 1) + "---:|",
    ]
    for i, name in enumerate(names):
        cells = [
            f"{sources[k]['per_output_mae_vs_exact'][name]:.4f}" for k in sources if k != "exact"
        ]
        std = report["hardware_mean_std"][i]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {std:.4f} |")
    lines += [
        "",
        f"Errors are mean |⟨O⟩ − ⟨O⟩ exact| over {over}; the standard error is the mean "
        "`stds` the estimator reported.",
        "",
        f"![hardware vs exact vs noisy simulation]({REPORT_PNG})",
        "",
    ]
    return "\n".join(lines)


def _reported_usage(record: JobRecord) -> float:
    """Total QPU seconds the service reported for the jobs whose results were saved."""
    total = 0.0
    for chunk in record.chunks:
        result = record.read_result(chunk["index"]) or {}
        value = result.get("usage", {}).get("usage")
        total += float(value) if isinstance(value, (int, float)) else 0.0
    return total


def _what_ran(record: JobRecord, references: dict[str, Any]) -> dict[str, str]:
    m = record.manifest
    transpile, execution = m["circuit"]["transpile"], m["execution"]
    job_ids = [c["job_id"] for c in record.chunks if c["job_id"]]
    attempts = sum(len(c["attempts"]) for c in record.chunks)
    usage = execution["usage_estimate"]
    noisy = references["noisy"]
    return {
        "backend": f"{m['backend']['name']} ({m['backend']['num_qubits']} qubits; "
        f"{m['backend']['mode']})",
        "circuit": f"{m['circuit']['template']['num_qubits']} qubits on physical "
        f"{transpile['layout']}; depth {transpile['depth']}; {transpile['two_qubit_gates']} "
        f"two-qubit gates (optimization level {transpile['optimization_level']})",
        "primitive": f"{execution['primitive']} (`{execution['primitive_class']}`)",
        "shots": f"{m['settings']['shots']} per parameter set and measurement basis",
        "mitigation requested": ", ".join(execution["mitigation_requested"]),
        "mitigation applied": _applied_text(record),
        "jobs": f"{len(record.chunks)} chunk(s), {attempts} submission(s), "
        f"{len(execution['batches'])} Batch(es); final job ids: "
        + ", ".join(f"`{j}`" for j in job_ids),
        "estimated QPU usage": f"≈ {usage['estimated_qpu_seconds']} s (rough, at plan time)",
        "reported QPU usage": f"{_reported_usage(record):.1f} s (sum over the jobs' usage())"
        + (" — local jobs use none" if record.local else ""),
        "Runtime warnings": "; ".join(execution["warnings"]) or "none",
        "exact reference": f"`{references['exact']['backend']}` backend",
        "noisy reference": (
            f"`aer` backend, noise {noisy['options'].get('noise')}, readout errors "
            f"{'on' if noisy['options'].get('readout') else 'off (TREX ran)'}; "
            + (
                "the same ISA circuit as the hardware run"
                if noisy.get("same_circuit_as_hardware")
                else f"its own transpilation (layout {noisy.get('layout')}, "
                f"{noisy.get('two_qubit_gates')} two-qubit gates)"
            )
            if "unavailable" not in noisy
            else "unavailable"
        ),
    }


def build_report(
    job_dir: str | Path,
    *,
    noise: str | None = None,
    noisy: bool = True,
    allow_partial: bool = False,
) -> dict[str, Any]:
    """Compare hardware, exact and noisy predictions; write report.md/.json/.png."""
    record = load_record(job_dir)
    hardware = hardware_outputs(record, allow_partial)
    positions, images = hardware["positions"], hardware["image_positions"]
    inputs = record.inputs()
    angles, labels = inputs["angles"][positions], inputs["labels"][images]
    run = record.manifest["run"]
    spec = ModelSpec(**run["model"])
    classifier = build_classifier(
        spec,
        run["n_channels"],
        run["n_classes"],
        record.classifier_state(),
        image_size=run.get("image_size", 28),
    )
    outputs: dict[str, np.ndarray] = {}
    references: dict[str, Any] = {}
    outputs["exact"], references["exact"] = exact_outputs(spec, angles, inputs["weights"])
    references["noisy"] = {"unavailable": "disabled (--no-noisy)", "options": {}}
    if noisy:
        values, references["noisy"] = noisy_outputs(record, spec, angles, inputs["weights"], noise)
        if values is not None:
            outputs["noisy"] = values
    outputs["hardware"] = hardware["evs"]
    names = [obs["name"] for obs in record.manifest["circuit"]["observables"]]
    summary = compare(outputs, labels, classifier, run["task"], names)
    scored = summary.pop("scored")
    report = {
        "created": now(),
        "job_dir": str(record.path),
        "run_dir": run["dir"],
        "checkpoint_epoch": run["checkpoint_epoch"],
        "dataset": run["dataset"],
        "split": record.manifest["inputs"]["split"],
        "backend": record.backend_name,
        "local": record.local,
        "n_images": int(len(images)),
        "rows_per_image": record.rows_per_image,
        "missing_chunks": hardware["missing_chunks"].tolist(),
        "outputs": names,
        "what_ran": _what_ran(record, references),
        "references": references,
        "comparison": summary,
        "hardware_mean_std": np.nanmean(hardware["stds"], axis=0).tolist(),
        "predictions": {
            "image_indices": inputs["indices"][images],
            "y_true": labels,
            **{f"y_pred_{k}": v["y_pred"] for k, v in scored.items()},
            **{f"y_score_{k}": v["y_score"] for k, v in scored.items()},
        },
    }
    title = (
        f"{report['dataset']} {report['split']}: {report['n_images']} images on "
        f"{report['backend']}" + (" (local testing mode)" if record.local else "")
    )
    save_figure(plot_comparison(outputs, summary, names, title), record.path / REPORT_PNG, dpi=110)
    write_json(record.path / REPORT_JSON, report, record.secrets)
    write_text(record.path / REPORT_MD, format_markdown(report), record.secrets)
    return report
