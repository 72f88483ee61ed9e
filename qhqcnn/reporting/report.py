"""``qhqcnn report RUN``: a one-page Markdown report of a run, with its figures.

Reads the files a run directory holds (``config.json``, ``history.json``, ``metrics_*.json``,
``predictions_<split>.npz``) and writes::

    RUN/report.md                        the report (figures linked relatively)
    RUN/figures/training_curves.png      loss, ACC, AUC per epoch, train and validation
    RUN/figures/roc_<split>.png          ROC curves (one-vs-rest for multi-class)
    RUN/figures/confusion_<split>.png    confusion matrix
    RUN/figures/circuit.png              the run's circuit (quantum models only)
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qhqcnn.errors import ConfigError, RunNotFoundError
from qhqcnn.io.files import atomic_write_text, read_json
from qhqcnn.training.rundir import RunDir

if TYPE_CHECKING:  # torch-backed modules are imported when used: `qhqcnn --help` stays fast
    import numpy as np

DIAGRAM_FOLD = 100


@dataclass
class RunFiles:
    """What a run directory holds, as loaded from its files."""

    run_dir: Path
    record: dict[str, Any]  # config.json: config, data, parameters, circuit, environment
    history: list[dict[str, Any]]
    metrics: list[dict[str, Any]]  # every metrics_*.json, own backend first
    predictions: dict[str, np.ndarray] | None  # predictions_<split>.npz (own backend)

    @property
    def config(self) -> dict[str, Any]:
        return self.record["config"]

    @property
    def data(self) -> dict[str, Any]:
        return self.record.get("data", {})

    @property
    def task(self) -> str:
        return self.data.get("task", "multi-class")

    @property
    def class_names(self) -> list[str]:
        names = self.data.get("label_names") or {}
        n = int(self.data.get("n_classes") or len(names))
        return [str(names.get(str(k), names.get(k, k))) for k in range(n)]

    @property
    def title(self) -> str:
        c = self.config
        relabel = f" (relabel {c['relabel']})" if c.get("relabel") else ""
        return f"{c['dataset']}{relabel} · {c['model']['model']} · seed {c['seed']}"


def load_run(run_dir: str | Path, split: str = "test") -> RunFiles:
    """Load a run's files; a clear error when it is not a run or has no finished epoch."""
    import numpy as np

    from qhqcnn.data.medmnist import SPLITS

    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    run = RunDir(run_dir).require()
    if not run.history_path.exists():
        raise RunNotFoundError(f"{run.path} has no {RunDir.HISTORY}: it finished no epoch yet")
    metrics = [read_json(path) for path in run.metrics_files()]
    metrics.sort(
        key=lambda m: (m.get("split") != split, str(m.get("split")), str(m.get("backend")))
    )
    predictions_path = run.predictions_path(split)
    predictions = None
    if predictions_path.exists():
        with np.load(predictions_path) as saved:
            predictions = {key: saved[key] for key in saved.files}
    return RunFiles(
        run_dir=run.path,
        record=run.record(),
        history=run.history(),
        metrics=metrics,
        predictions=predictions,
    )


# -- figures ----------------------------------------------------------------------------------
def write_figures(run: RunFiles, split: str = "test") -> dict[str, str]:
    """Draw the run's figures into ``RUN/figures``; returns {kind: path relative to RUN}."""
    from qhqcnn.reporting.plots import (
        plot_confusion_matrix,
        plot_roc_curves,
        plot_training_curves,
        save_figure,
    )

    figures: dict[str, str] = {}

    def save(kind: str, fig, file_name: str) -> None:
        relative = f"{RunDir.FIGURES}/{file_name}"
        save_figure(fig, run.run_dir / relative)
        figures[kind] = relative

    from qhqcnn.training.metrics import MULTI_LABEL

    loss_name = "BCE" if run.task == MULTI_LABEL else "cross-entropy"
    save(
        "curves",
        plot_training_curves(run.history, title=run.title, loss_name=loss_name),
        "training_curves.png",
    )
    if run.predictions is not None:
        y_true, y_score = run.predictions["y_true"], run.predictions["y_score"]
        label = f"{run.title} — {split} split"
        save(
            "roc",
            plot_roc_curves(y_true, y_score, run.task, run.class_names, title=f"ROC, {label}"),
            f"roc_{split}.png",
        )
        save(
            "confusion",
            plot_confusion_matrix(
                y_true, y_score, run.task, run.class_names, title=f"Confusion matrix, {label}"
            ),
            f"confusion_{split}.png",
        )
    template = run_template(run)
    if template is not None:
        figures["circuit"] = write_circuit_figure(template, run.run_dir / RunDir.FIGURES)
    return figures


def run_template(run: RunFiles):
    """The circuit template of a quantum run (``None`` for a classical ablation or twin)."""
    config = RunDir(run.run_dir).config()
    return config.model.template() if config.model.is_quantum else None


def write_circuit_figure(template, folder: Path) -> str:
    import matplotlib.pyplot as plt

    from qhqcnn.export.library import mpl_diagram
    from qhqcnn.reporting.plots import save_figure

    fig = mpl_diagram(template.circuit)
    try:
        save_figure(fig, folder / "circuit.png", dpi=110, tight=True, palette=True)
    finally:
        plt.close(fig)
    return f"{RunDir.FIGURES}/circuit.png"


# -- Markdown ---------------------------------------------------------------------------------
def _table(header: list[str], rows: list[list[Any]], align: str | None = None) -> list[str]:
    align = align or "|".join("---" for _ in header)
    lines = ["| " + " | ".join(header) + " |", f"|{align}|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "—"
    return "—" if value is None else str(value)


def metrics_section(run: RunFiles) -> list[str]:
    if not run.metrics:
        return [
            "No evaluation yet: run `qhqcnn evaluate RUN --split test` and then this report again."
        ]
    rows = [
        [
            m.get("split"),
            m.get("backend"),
            _fmt(m.get("backend_options")),
            m.get("checkpoint_epoch"),
            m.get("n_images"),
            f"{m['acc']:.4f}",
            f"{m['auc']:.4f}",
        ]
        for m in run.metrics
    ]
    header = ["split", "backend", "options", "checkpoint epoch", "images", "ACC", "AUC"]
    return _table(header, rows, "---|---|---|---:|---:|---:|---:")


def training_summary(run: RunFiles) -> str:
    from qhqcnn.reporting.plots import best_record

    best = best_record(run.history)
    seconds = sum(r.get("seconds", 0.0) for r in run.history)
    planned = run.config.get("epochs")
    stopped = len(run.history) < planned if planned else False
    return (
        f"{len(run.history)} of {planned} epochs finished"
        + (" (early stopping or interrupted)" if stopped else "")
        + f" in {seconds:.1f} s; best validation AUC {best.get('val_auc', float('nan')):.4f} "
        f"(ACC {best.get('val_acc', float('nan')):.4f}) at epoch {best['epoch']}, whose "
        "checkpoint is the one evaluated."
    )


def parameters_section(run: RunFiles) -> list[str]:
    counts = run.record.get("parameters", {})
    rows = [
        ["classical (backbone, bridge, classifier)", f"{counts.get('classical', 0):,}"],
        ["quantum (circuit weights)", f"{counts.get('quantum', 0):,}"],
        ["head (the layer the ablation swaps)", f"{counts.get('head', 0):,}"],
        ["total trainable", f"{counts.get('total', 0):,}"],
    ]
    return _table(["parameters", "count"], rows, "---|---:")


def circuit_section(run: RunFiles, figures: dict[str, str]) -> list[str]:
    template = run_template(run)
    if template is None:
        stand_in = RunDir(run.run_dir).config().model.template()
        return [
            "Classical ablation: no circuit runs. The quantum layer is replaced by "
            f"`tanh(Linear({stand_in.num_inputs}, {stand_in.num_outputs}))`, with the input and "
            f"output sizes of the {stand_in.num_qubits}-qubit circuit ({stand_in.num_weights} "
            "weights) that it stands in for."
        ]
    summary = dict(run.record.get("circuit") or template.summary())
    backend = summary.pop("backend", {}) or {}
    rows = [
        ["qubits", summary["num_qubits"]],
        ["inputs (encoded features)", summary["num_inputs"]],
        ["weights (trainable)", summary["num_weights"]],
        ["outputs", ", ".join(summary.get("outputs", []))],
        ["depth", summary["depth"]],
        ["gates", ", ".join(f"{k} {v}" for k, v in sorted(summary["gate_counts"].items()))],
        ["backend", backend.get("name", run.config.get("backend"))],
    ]
    if backend.get("transpiled"):
        rows += [
            ["device", backend.get("device")],
            ["physical qubits", backend.get("layout")],
            ["ISA depth", backend.get("depth")],
            ["two-qubit gates", backend.get("two_qubit_gates")],
        ]
    from qhqcnn.export.library import text_diagram

    diagram = text_diagram(template.circuit, fold=DIAGRAM_FOLD).rstrip("\n")
    lines = [template.description, ""] + _table(["property", "value"], rows, "---|---")
    if "circuit" in figures:
        lines += ["", f"![circuit]({figures['circuit']})"]
    details = ["<details><summary>text diagram</summary>", "", "```text", str(diagram), "```"]
    return lines + ["", *details, "", "</details>"]


def data_section(run: RunFiles) -> list[str]:
    from qhqcnn.evaluation.evaluate import SPLITS

    data = run.data
    images = data.get("n_images", {})
    rows = [
        ["dataset", data.get("dataset")],
        ["task", data.get("task")],
        ["classes", ", ".join(f"{k}: {n}" for k, n in enumerate(run.class_names))],
        ["channels", data.get("n_channels")],
        ["images (train / val / test)", " / ".join(str(images.get(s, "—")) for s in SPLITS)],
        ["file (MD5)", f"{data.get('file')} ({data.get('md5')})"],
    ]
    return _table(["property", "value"], rows, "---|---")


def config_section(run: RunFiles) -> list[str]:
    rows = []
    for key, value in run.config.items():
        if key == "model":
            rows += [[f"model.{k}", _fmt(v)] for k, v in value.items()]
        else:
            rows.append([key, _fmt(value)])
    return _table(["setting", "value"], rows, "---|---")


def environment_section(run: RunFiles) -> list[str]:
    env = run.record.get("environment", {})
    packages = ", ".join(f"{k} {v}" for k, v in env.get("packages", {}).items())
    machine = env.get("machine", {})
    return [
        f"- packages: {packages or '—'}",
        f"- git commit: `{env.get('git_commit')}`",
        f"- machine: {machine.get('platform', '—')}, {machine.get('cpu_count', '—')} CPUs",
    ]


def report_markdown(run: RunFiles, figures: dict[str, str], split: str = "test") -> str:
    """The report's Markdown, with ``figures`` ({kind: relative path}) embedded."""
    lines = [
        f"# Run report: {run.title}",
        "",
        f"Generated by `qhqcnn report` from the files in `{run.run_dir.name}/`.",
        "",
        "## Metrics",
        "",
        *metrics_section(run),
        "",
        training_summary(run),
        "",
        "## Training curves",
        "",
        f"![training curves]({figures['curves']})",
        "",
        "Train values are measured during each epoch (augmentation and dropout active),",
        "validation values on the validation split in evaluation mode.",
    ]
    if "roc" in figures:
        lines += [
            "",
            f"## ROC curves and confusion matrix ({split} split)",
            "",
            f"![ROC curves]({figures['roc']})",
            f"![confusion matrix]({figures['confusion']})",
        ]
    else:
        lines += ["", f"No `predictions_{split}.npz`: run `qhqcnn evaluate` for the ROC curves."]
    lines += ["", "## Parameters", "", *parameters_section(run)]
    lines += ["", "## Circuit", "", *circuit_section(run, figures)]
    lines += ["", "## Data", "", *data_section(run)]
    lines += ["", "## Configuration", "", *config_section(run)]
    lines += ["", "## Environment", "", *environment_section(run), ""]
    return "\n".join(lines)


def write_report(run_dir: str | Path, split: str = "test") -> Path:
    """Draw the figures and write ``RUN/report.md``; returns the report's path."""
    run = load_run(run_dir, split)
    figures = write_figures(run, split)
    return atomic_write_text(RunDir(run.run_dir).report_path, report_markdown(run, figures, split))


# -- CLI --------------------------------------------------------------------------------------
def register(sub) -> None:
    """Add ``qhqcnn report RUN`` to the ``qhqcnn`` subparsers ``sub``."""
    p = sub.add_parser(
        "report", help="write RUN/report.md: metrics, training curves, ROC, confusion matrix"
    )
    p.add_argument("run", help="run directory written by `qhqcnn train`")
    p.add_argument(
        "--split", default="test", help="split of the ROC and confusion figures: train, val, test"
    )
    p.set_defaults(handler=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    path = write_report(args.run, args.split)
    print(f"report written to {path}")
    return 0
