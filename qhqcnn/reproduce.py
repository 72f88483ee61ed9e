"""The reproduction study: every (dataset, model, seed) cell trained, tested and tabulated.

``qhqcnn reproduce`` trains each model with each seed on the official splits of every dataset
present in the data directory, evaluates the best-validation checkpoint once on the test split,
and writes ``results.json`` (every config and number) and ``results.md`` (mean ± std tables,
published baselines, a paired Wilcoxon signed-rank test of HQCNN vs its classical ablation).
Cells already finished are reused and interrupted cells resume, so the study can be stopped and
restarted at any time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from qhqcnn.config import TrainConfig
from qhqcnn.data import dataset_info, resolve_data_dir
from qhqcnn.errors import ConfigError
from qhqcnn.evaluate import evaluate_run
from qhqcnn.io import atomic_write_json, atomic_write_text, environment_record, read_json
from qhqcnn.train import CONFIG_FILE, HISTORY_FILE, Trainer

#: MedMNIST v2 (Yang et al., Sci. Data 2023), Table 3, 28×28 test split: (AUC, ACC).
PUBLISHED_BASELINES: dict[str, dict[str, tuple[float, float]]] = {
    "breastmnist": {
        "ResNet-18 (28)": (0.901, 0.863),
        "ResNet-50 (28)": (0.857, 0.812),
        "auto-sklearn": (0.836, 0.803),
        "AutoKeras": (0.871, 0.831),
        "Google AutoML Vision": (0.919, 0.861),
    },
    "bloodmnist": {
        "ResNet-18 (28)": (0.998, 0.958),
        "ResNet-50 (28)": (0.997, 0.956),
        "auto-sklearn": (0.984, 0.878),
        "AutoKeras": (0.998, 0.961),
        "Google AutoML Vision": (0.998, 0.966),
    },
    "retinamnist": {
        "ResNet-18 (28)": (0.717, 0.524),
        "ResNet-50 (28)": (0.726, 0.528),
        "auto-sklearn": (0.690, 0.515),
        "AutoKeras": (0.719, 0.503),
        "Google AutoML Vision": (0.750, 0.531),
    },
}


@dataclass
class StudyPlan:
    """What to run: datasets × models × seeds on one shared training recipe."""

    datasets: list[str]
    models: list[str]
    seeds: list[int]
    recipe: TrainConfig = field(default_factory=TrainConfig)
    noise: str | None = None

    def cells(self) -> list[tuple[str, str, int]]:
        return [(d, m, s) for d in self.datasets for m in self.models for s in self.seeds]


def present_datasets(requested: list[str] | None, data_dir: str | None) -> tuple[list, list]:
    """The requested datasets (default: all 2D ones) split into present and missing files."""
    from qhqcnn.data import available_datasets

    names = [n.lower() for n in requested] if requested else available_datasets()
    root = resolve_data_dir(data_dir)
    present, missing = [], []
    for name in names:
        info = dataset_info(name)
        (present if (root / info.file_name).exists() else missing).append(name)
    return present, missing


def cell_dir(out: Path, dataset: str, model: str, seed: int) -> Path:
    return out / dataset / model / f"seed{seed}"


def run_cell(
    plan: StudyPlan,
    out: Path,
    dataset: str,
    model: str,
    seed: int,
    *,
    data_dir: str | None,
    progress: bool,
) -> dict[str, Any]:
    """Train (or resume, or reuse) one cell and return its test metrics and cost."""
    run = cell_dir(out, dataset, model, seed)
    metrics_path = run / "metrics_test.json"
    if not metrics_path.exists():
        if (run / CONFIG_FILE).exists():
            trainer = Trainer.resume(run, data_dir=data_dir, progress=progress)
        else:
            config = replace(
                plan.recipe,
                dataset=dataset,
                seed=seed,
                model=replace(plan.recipe.model, model=model),
            )
            trainer = Trainer(config, run, data_dir=data_dir, progress=progress)
        trainer.fit()
        evaluate_run(run, "test", data_dir=data_dir)
    record = read_json(run / CONFIG_FILE)
    history = read_json(run / HISTORY_FILE)
    metrics = read_json(metrics_path)
    cell = {
        "dataset": dataset,
        "model": model,
        "seed": seed,
        "run": str(run),
        "test_acc": metrics["acc"],
        "test_auc": metrics["auc"],
        "best_epoch": metrics["checkpoint_epoch"],
        "epochs_run": len(history),
        "train_seconds": float(sum(h["seconds"] for h in history)),
        "parameters": record["parameters"],
        "config": record["config"],
    }
    if plan.noise and model != "classical":
        noisy = _noisy_metrics(run, plan.noise, data_dir)
        cell["noisy"] = {"noise": plan.noise, "test_acc": noisy["acc"], "test_auc": noisy["auc"]}
    return cell


def _noisy_metrics(run: Path, noise: str, data_dir: str | None) -> dict[str, Any]:
    from qhqcnn.evaluate import result_tag

    options = {"noise": noise}
    path = run / f"metrics_test{result_tag('aer', options)}.json"
    if path.exists():
        return read_json(path)
    return evaluate_run(run, "test", data_dir=data_dir, backend="aer", backend_options=options)


def summarize(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean ± std (sample std, ddof=1) of test ACC/AUC per (dataset, model)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for cell in cells:
        groups.setdefault((cell["dataset"], cell["model"]), []).append(cell)
    rows = []
    for (dataset, model), group in groups.items():
        acc = np.array([c["test_acc"] for c in group])
        auc = np.array([c["test_auc"] for c in group])
        ddof = 1 if len(group) > 1 else 0
        rows.append(
            {
                "dataset": dataset,
                "model": model,
                "n_seeds": len(group),
                "acc_mean": float(acc.mean()),
                "acc_std": float(acc.std(ddof=ddof)),
                "auc_mean": float(auc.mean()),
                "auc_std": float(auc.std(ddof=ddof)),
                "parameters": group[0]["parameters"],
                "train_seconds_median": float(np.median([c["train_seconds"] for c in group])),
            }
        )
    return rows


def paired_test(cells: list[dict[str, Any]], dataset: str, metric: str = "test_auc") -> dict:
    """Wilcoxon signed-rank test of HQCNN vs classical over seeds (paired by seed)."""
    from scipy.stats import wilcoxon

    by_seed: dict[str, dict[int, float]] = {"hqcnn": {}, "classical": {}}
    for cell in cells:
        if cell["dataset"] == dataset and cell["model"] in by_seed:
            by_seed[cell["model"]][cell["seed"]] = cell[metric]
    seeds = sorted(set(by_seed["hqcnn"]) & set(by_seed["classical"]))
    if len(seeds) < 2:
        return {"metric": metric, "n_pairs": len(seeds), "p_value": None}
    diff = np.array([by_seed["hqcnn"][s] - by_seed["classical"][s] for s in seeds])
    if np.allclose(diff, 0):
        p_value = 1.0
    else:
        p_value = float(wilcoxon(diff, zero_method="zsplit").pvalue)
    return {
        "metric": metric,
        "n_pairs": len(seeds),
        "mean_difference": float(diff.mean()),
        "p_value": p_value,
    }


def describe_recipe(recipe: dict[str, Any]) -> str:
    """The shared recipe in one line (the model name varies per row, so it is left out)."""
    spec = {k: v for k, v in recipe.get("model", {}).items() if k != "model"}
    flat = {
        k: v
        for k, v in recipe.items()
        if k not in ("model", "relabel", "max_train", "max_eval", "threads")
    }
    return ", ".join(f"{k}={v}" for k, v in {**flat, **spec}.items())


def render_markdown(study: dict[str, Any]) -> str:
    """``results.md``: per-dataset tables with baselines and the paired test."""
    lines = [
        "# Reproduction study: HQCNN vs its classical ablation on MedMNIST (28×28)",
        "",
        f"Produced by `{study['command']}` on {study['finished']}. "
        f"Seeds: {', '.join(map(str, study['seeds']))}. Test split read once per run "
        "(best-validation-AUC checkpoint). Raw numbers and every config: `results.json`.",
        "",
        "Recipe (shared by every model): " + describe_recipe(study["recipe"]) + ".",
        "",
        "Train times are wall-clock on a shared 2-core machine (they include validation and vary",
        "with load); controlled step timings are in `docs/performance.md`.",
        "",
    ]
    if study["missing"]:
        lines += [
            f"Not run (file absent from the data directory): {', '.join(study['missing'])}.",
            "",
        ]
    for dataset in study["datasets"]:
        rows = [r for r in study["summary"] if r["dataset"] == dataset]
        lines += [
            f"## {dataset}",
            "",
            "| model | seeds | test ACC (mean ± std) | test AUC (mean ± std) "
            "| params classical / quantum | train wall time / run (median) |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            p = r["parameters"]
            lines.append(
                f"| {r['model']} | {r['n_seeds']} | {r['acc_mean']:.3f} ± {r['acc_std']:.3f} "
                f"| {r['auc_mean']:.3f} ± {r['auc_std']:.3f} | {p['classical']:,} / {p['quantum']}"
                f" | {r['train_seconds_median']:.0f} s |"
            )
        for name, (auc, acc) in PUBLISHED_BASELINES.get(dataset, {}).items():
            lines.append(f"| {name} (published) | – | {acc:.3f} | {auc:.3f} | – | – |")
        noisy = [c for c in study["cells"] if c["dataset"] == dataset and "noisy" in c]
        if noisy:
            acc = np.mean([c["noisy"]["test_acc"] for c in noisy])
            auc = np.mean([c["noisy"]["test_auc"] for c in noisy])
            lines.append(
                f"| hqcnn under {noisy[0]['noisy']['noise']} noise | {len(noisy)} "
                f"| {acc:.3f} | {auc:.3f} | – | – |"
            )
        test = study["paired_tests"].get(dataset)
        lines.append("")
        if test and test["p_value"] is not None:
            lines.append(
                f"Wilcoxon signed-rank, HQCNN vs classical ablation, test AUC paired by seed: "
                f"mean difference {test['mean_difference']:+.4f}, p = {test['p_value']:.3f} "
                f"({test['n_pairs']} pairs)."
            )
        lines.append("")
    return "\n".join(lines)


def run_study(
    plan: StudyPlan,
    out: str | Path,
    *,
    data_dir: str | None = None,
    missing: list | None = None,
    docs_path: str | Path | None = None,
    command: str = "qhqcnn reproduce",
    progress: bool = True,
) -> dict[str, Any]:
    """Run every cell of ``plan`` (reusing finished ones) and write the result files."""
    if not plan.datasets:
        raise ConfigError("no dataset file found in the data directory; nothing to reproduce")
    out = Path(out)
    cells = []
    for dataset, model, seed in plan.cells():
        print(f"== {dataset} / {model} / seed {seed}")
        cells.append(
            run_cell(plan, out, dataset, model, seed, data_dir=data_dir, progress=progress)
        )
    study = {
        "command": command,
        "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "datasets": plan.datasets,
        "missing": missing or [],
        "models": plan.models,
        "seeds": plan.seeds,
        "noise": plan.noise,
        "recipe": {k: v for k, v in plan.recipe.to_dict().items() if k not in ("dataset", "seed")},
        "cells": cells,
        "summary": summarize(cells),
        "paired_tests": {
            d: paired_test(cells, d)
            for d in plan.datasets
            if {"hqcnn", "classical"} <= set(plan.models)
        },
        "published_baselines": {d: PUBLISHED_BASELINES.get(d, {}) for d in plan.datasets},
        "environment": environment_record(),
    }
    atomic_write_json(out / "results.json", study)
    markdown = render_markdown(study)
    atomic_write_text(out / "results.md", markdown)
    if docs_path is not None:
        atomic_write_text(docs_path, markdown)
        atomic_write_json(Path(docs_path).with_suffix(".json"), study)
    return study
