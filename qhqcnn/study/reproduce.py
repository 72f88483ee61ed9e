"""The reproduction study: every (dataset, model, seed) cell trained, tested and tabulated.

``qhqcnn reproduce`` trains each model with each seed on the official splits of every dataset
present in the data directory, evaluates the best-validation checkpoint once on the test split,
and writes ``results.json`` (every config and number) and ``results.md`` (mean ± std tables,
published baselines, and a paired Wilcoxon signed-rank test of each quantum model vs its
parameter-matched classical twin: hqcnn↔classical, quanv↔quanv-classical, qcnn↔qcnn-classical,
for every pair whose both models are in the study). Cells already finished are reused and
interrupted cells resume, so the study can be stopped and restarted at any time. A fixed
quanvolution filter's features come from the same on-disk cache as ``qhqcnn train``
(:mod:`qhqcnn.nn.feature_cache`).

``finished_only`` tabulates the cells that already have test metrics and trains nothing (it
only adds, to a finished cell that lacks them, its test-set bootstrap cache and medmnist
result file, both computed from the saved test predictions); the others are listed as not
run, and each row says how many seeds it has (``n``), so a study can report fewer seeds for
its expensive cells honestly.

Finished cells recorded in another study's ``results.json`` (trained on another machine whose
run directories are gone, say) are tabulated beside the cells trained here and not trained
again (``imported``, from :mod:`qhqcnn.study.imported`); each table names them.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from qhqcnn.config import DEFAULT_LR, TrainConfig, default_lr
from qhqcnn.data.medmnist import dataset_info, resolve_data_dir
from qhqcnn.errors import ConfigError
from qhqcnn.evaluation.evaluate import evaluate_run
from qhqcnn.io.files import (
    atomic_write,
    atomic_write_json,
    atomic_write_text,
    environment_record,
    read_json,
)
from qhqcnn.models import classical_twins, model_names, quantum_models
from qhqcnn.study.imported import CellKey, describe_imported
from qhqcnn.study.stats import (
    ALPHA,
    TEST_BOOTSTRAPS,
    holm,
    holm_p_floor,
    min_pairs_to_reject,
    paired_comparison,
    reading,
    test_set_bootstrap,
)
from qhqcnn.training.pipeline import train
from qhqcnn.training.rundir import RunDir

#: Config keys that may differ between a cell and the study recipe: what the cell is, and how
#: the machine ran it (not what was trained).
CELL_KEYS = ("dataset", "seed", "model.model", "threads", "device")

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


#: The targets of issue #18 (test split, mean over seeds): (ACC, AUC) = the best published
#: 28×28 classical result. Reported as met or missed for HQCNN and for every classical model
#: trained with the same recipe; never used to choose anything (hyperparameters come from the
#: validation split).
TARGETS: dict[str, tuple[float, float]] = {
    "breastmnist": (0.865, 0.901),
    "bloodmnist": (0.966, 0.998),
    "retinamnist": (0.543, 0.754),
}
#: Models whose mean is compared with the targets (when they are in the study).
TARGET_MODELS = ("hqcnn", "classical", "backbone-head", "resnet18")
#: The HQCNN paper's own numbers (arXiv 2509.14277 v1; docs in ../shared/notes/hqcnn-paper.md):
#: (ACC, AUC or None, source). CLAIMS, shown in their own marked row: never targets, never
#: reproduced here (no code, hyper-parameters, seeds or splits were published).
PAPER_CLAIMS: dict[str, tuple[float, float | None, str]] = {
    "breastmnist": (0.8718, 0.9004, "ACC: abstract; AUC: a third-party review"),
    "pathmnist": (0.9340, 0.9959, "9-class; a third-party research note"),
    "organamnist": (0.9995, None, "abstract"),
    "pneumoniamnist": (0.9616, 0.9889, "a third-party reimplementation's README"),
}
PAPER_LABEL = "HQCNN paper, arXiv 2509.14277 (claim, not reproduced, not a target)"
#: What the paper rows are and are not.
PAPER_CLAIMS_NOTE = (
    "Rows marked *claim* are the HQCNN paper's own numbers (arXiv 2509.14277 v1), copied from "
    "../shared/notes/hqcnn-paper.md with their sources: no code, hyper-parameters, seeds or splits "
    "were published, so they are neither reproduced nor used as targets."
)
#: Baseline comparisons made whenever both models are in the study (beside each quantum model
#: vs its classical twin): what the bottleneck costs, and the hybrid vs a standard CNN.
BASELINE_COMPARISONS = (
    ("hqcnn", "backbone-head"),
    ("classical", "backbone-head"),
    ("hqcnn", "resnet18"),
)


@dataclass
class StudyPlan:
    """What to run: datasets × models × seeds on one shared training recipe."""

    datasets: list[str]
    models: list[str]
    seeds: list[int]
    recipe: TrainConfig = field(default_factory=TrainConfig)
    noise: str | None = None
    #: each model at its own default learning rate (:func:`qhqcnn.config.default_lr`) instead
    #: of ``recipe.lr`` (the CLI's choice when no ``--lr`` is given)
    model_lr: bool = False

    def __post_init__(self) -> None:
        unknown = [m for m in self.models if m not in model_names()]
        if unknown:
            raise ConfigError(
                f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(model_names())}"
            )
        if not self.models:
            raise ConfigError("no model to run")

    def cell_config(self, dataset: str, model: str, seed: int) -> TrainConfig:
        """The recipe as one cell trains it."""
        lr = None if self.model_lr else self.recipe.lr  # None: the model's default
        spec = replace(self.recipe.model, model=model)
        return replace(self.recipe, dataset=dataset, seed=seed, model=spec, lr=lr)

    def recipe_record(self) -> dict[str, Any]:
        """The shared recipe (without the per-cell dataset and seed); ``lr`` is a per-model
        table when models differ in it."""
        record = {k: v for k, v in self.recipe.to_dict().items() if k not in ("dataset", "seed")}
        if self.model_lr:
            record["lr"] = {m: default_lr(m) for m in self.models}
            if len(set(record["lr"].values())) == 1:
                record["lr"] = next(iter(record["lr"].values()))
        return record

    def cells(self) -> list[CellKey]:
        return [(d, m, s) for d in self.datasets for m in self.models for s in self.seeds]

    def pairs(self) -> list[tuple[str, str]]:
        """(quantum model, classical twin) pairs whose both models are in the study."""
        twins = classical_twins().items()
        return [(q, c) for q, c in twins if q in self.models and c in self.models]

    def comparisons(self) -> list[tuple[str, str]]:
        """Every paired comparison of one table: the twin pairs, then the baseline ones."""
        extra = [(a, b) for a, b in BASELINE_COMPARISONS if a in self.models and b in self.models]
        return self.pairs() + extra


def present_datasets(requested: list[str] | None, data_dir: str | None) -> tuple[list, list]:
    """The requested datasets (default: all 2D ones) split into present and missing files."""
    from qhqcnn.data.medmnist import available_datasets

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
    cache: bool = True,
    cache_dir: str | Path | None = None,
    evaluate_noise: bool = True,
) -> dict[str, Any]:
    """Train (or resume, or reuse) one cell and return its test metrics and cost.

    A fixed quanvolution filter's features are loaded from (or computed into) the on-disk
    cache in ``cache_dir`` (default as ``qhqcnn train``: ``$QHQCNN_CACHE_DIR``, else
    ``~/.cache/qhqcnn``) unless ``cache`` is false. ``evaluate_noise``: as in :func:`read_cell`.
    """
    run = cell_dir(out, dataset, model, seed)
    if not RunDir(run).metrics_path("test").exists():
        train(
            plan.cell_config(dataset, model, seed),
            run,
            data_dir=data_dir,
            resume=RunDir(run).exists(),
            progress=progress,
            feature_cache=cache,
            cache_dir=cache_dir,
        )
    return read_cell(
        plan, run, dataset, model, seed, data_dir=data_dir, evaluate_noise=evaluate_noise
    )


def _imported_cell(plan: StudyPlan, record: dict[str, Any]) -> dict[str, Any]:
    """An imported cell (:mod:`qhqcnn.study.imported`) with its recipe differences measured
    against this study's recipe (its noisy metrics only if they are for this study's noise)."""
    cell = {k: v for k, v in record.items() if k not in ("recipe_differences", "noisy")}
    planned = plan.cell_config(record["dataset"], record["model"], record["seed"]).to_dict()
    differences = recipe_differences(planned, record["config"])
    if differences:
        cell["recipe_differences"] = differences
    noisy = record.get("noisy")
    if plan.noise and noisy and noisy.get("noise") == plan.noise:
        cell["noisy"] = noisy
    return cell


def read_cell(
    plan: StudyPlan,
    run: Path,
    dataset: str,
    model: str,
    seed: int,
    *,
    data_dir: str | None,
    evaluate_noise: bool = True,
) -> dict[str, Any]:
    """The record of a finished cell (``metrics_test.json`` present) from its run files.

    With ``plan.noise``, a quantum cell also gets its noisy test metrics: read if already
    computed, else computed now unless ``evaluate_noise`` is false (then left out).
    """
    run_files = RunDir(run)
    record = run_files.record()
    history = run_files.history()
    metrics = read_json(run_files.metrics_path("test"))
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
    bootstrap = run_bootstrap(run)
    if bootstrap is not None:
        cell["test_bootstrap"] = bootstrap
    medmnist_file = ensure_medmnist_file(run, metrics)
    if medmnist_file is not None:
        # named inside the run directory as the study names it (the run may have recorded an
        # absolute path of the machine that trained it)
        cell["medmnist_file"] = str(run / medmnist_file.name)
    planned = plan.cell_config(dataset, model, seed).to_dict()
    differences = recipe_differences(planned, record["config"])
    if differences:
        cell["recipe_differences"] = differences
    if plan.noise and model in quantum_models():
        noisy = _noisy_metrics(run, plan.noise, data_dir, compute=evaluate_noise)
        if noisy is not None:
            cell["noisy"] = {
                "noise": plan.noise,
                "test_acc": noisy["acc"],
                "test_auc": noisy["auc"],
            }
    return cell


BOOTSTRAP_FILE = "bootstrap_test.json"


def run_bootstrap(run: Path, *, compute: bool = True) -> dict[str, Any] | None:
    """The run's test-set bootstrap intervals (:func:`~qhqcnn.study.stats.test_set_bootstrap`,
    test images resampled, medmnist's metric definitions), cached in ``bootstrap_test.json``;
    ``None`` when the run has no saved test predictions (or ``compute`` is false and no cache)."""
    from qhqcnn.training.metrics import medmnist_metrics

    path = run / BOOTSTRAP_FILE
    if path.exists():
        return read_json(path)
    predictions = RunDir(run).predictions_path("test")
    if not predictions.exists() or not compute:
        return None
    task = RunDir(run).record()["data"]["task"]
    with np.load(predictions) as saved:
        y_true, y_score = saved["y_true"], saved["y_score"]
    result = test_set_bootstrap(
        y_true, y_score, lambda t, p: medmnist_metrics(t, p, task), n_boot=TEST_BOOTSTRAPS
    )
    atomic_write_json(path, result)
    return result


def ensure_medmnist_file(run: Path, metrics: dict[str, Any]) -> Path | None:
    """The run's test scores in medmnist's ``Evaluator`` result-file format, written from
    ``predictions_test.npz`` if an older run has none (``None`` without saved predictions)."""
    from qhqcnn.evaluation.evaluate import write_medmnist_result

    existing = metrics.get("medmnist_file")
    if existing and Path(existing).exists():
        return Path(existing)
    predictions = RunDir(run).predictions_path("test")
    if not predictions.exists():
        return None
    with np.load(predictions) as saved:
        y_score = saved["y_score"]
    return write_medmnist_result(run, RunDir(run).config(), "test", y_score, metrics)


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict) and key == "model":
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def recipe_differences(recipe: dict[str, Any], config: dict[str, Any]) -> dict[str, list]:
    """``{key: [cell value, recipe value]}`` where a reused cell's saved config differs from the
    study's recipe (keys of :data:`CELL_KEYS` and keys absent on either side are ignored)."""
    mine, planned = _flatten(config), _flatten(recipe)
    return {
        key: [mine[key], planned[key]]
        for key in mine
        if key in planned and key not in CELL_KEYS and mine[key] != planned[key]
    }


def cell_status(run: Path) -> str:
    """Why a cell has no test metrics: ``not started``, ``started, k/N epochs`` (running,
    interrupted or early-stopped) or ``trained, not evaluated``."""
    run_files = RunDir(run)
    if not run_files.exists():
        return "not started"
    planned = run_files.record()["config"].get("epochs")
    done = len(run_files.history())
    if planned is not None and done >= planned:
        return "trained, not evaluated"
    return f"started, {done}/{planned} epochs"


def _noisy_metrics(
    run: Path, noise: str, data_dir: str | None, *, compute: bool = True
) -> dict[str, Any] | None:
    from qhqcnn.evaluation.evaluate import result_tag

    options = {"noise": noise}
    path = RunDir(run).metrics_path("test", result_tag("aer", options))
    if path.exists():
        return read_json(path)
    if not compute:
        return None
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
                "seeds": sorted(c["seed"] for c in group),
                "acc_mean": float(acc.mean()),
                "acc_std": float(acc.std(ddof=ddof)),
                "auc_mean": float(auc.mean()),
                "auc_std": float(auc.std(ddof=ddof)),
                "parameters": group[0]["parameters"],
                "train_seconds_median": float(np.median([c["train_seconds"] for c in group])),
                "train_seconds_total": float(sum(c["train_seconds"] for c in group)),
                "auc_run_ci95_median": _median_interval(group, "auc_ci95"),
            }
        )
    return rows


def _by_seed(cells: list[dict[str, Any]], dataset: str, model: str, metric: str) -> dict:
    return {c["seed"]: c[metric] for c in cells if c["dataset"] == dataset and c["model"] == model}


def _median_interval(group: list[dict[str, Any]], key: str) -> list[float] | None:
    """Seed-median of the runs' test-set bootstrap bounds (``None`` if a run has none)."""
    bounds = [c.get("test_bootstrap", {}).get(key) for c in group]
    if not bounds or any(b is None for b in bounds):
        return None
    return [float(np.median([b[0] for b in bounds])), float(np.median([b[1] for b in bounds]))]


def paired_test(
    cells: list[dict[str, Any]],
    dataset: str,
    metric: str = "test_auc",
    *,
    quantum: str = "hqcnn",
    classical: str | None = None,
) -> dict:
    """``quantum`` − ``classical`` (default: its twin in
    :func:`~qhqcnn.models.classical_twins`) over the seeds both have finished, paired by
    seed: mean difference, paired bootstrap 95 % CI, Cohen's d_z, rank-biserial, and the exact
    two-sided Wilcoxon signed-rank p with its floor at this n (:mod:`qhqcnn.study.stats`)."""
    classical = classical or classical_twins()[quantum]
    comparison = paired_comparison(
        _by_seed(cells, dataset, quantum, metric), _by_seed(cells, dataset, classical, metric)
    )
    return {"quantum": quantum, "classical": classical, "metric": metric, **comparison}


def compare_all(
    cells: list[dict[str, Any]], dataset: str, comparisons: list[tuple[str, str]]
) -> list[dict[str, Any]]:
    """Every comparison of one table on test AUC and test ACC, with Holm-adjusted p-values over
    the whole family (all comparisons × both metrics of this dataset) and their reading."""
    results = [
        paired_test(cells, dataset, metric, quantum=a, classical=b)
        for a, b in comparisons
        for metric in ("test_auc", "test_acc")
    ]
    tested = [r for r in results if r["p_value"] is not None]
    floor = holm_p_floor([r["p_floor"] for r in tested])
    for result, adjusted in zip(results, holm([r["p_value"] for r in results]), strict=True):
        result["p_holm"] = adjusted
        result["family_size"] = len(tested)
        result["holm_floor"] = floor
        result["reading"] = reading(result)
    return results


def describe_recipe(recipe: dict[str, Any]) -> str:
    """The shared recipe in one line (the model name varies per row, so it is left out)."""
    spec = {k: v for k, v in recipe.get("model", {}).items() if k != "model"}
    flat = {
        k: v
        for k, v in recipe.items()
        if k not in ("model", "relabel", "max_train", "max_eval", "threads")
    }
    if isinstance(flat.get("lr"), dict):
        own = {m: lr for m, lr in flat["lr"].items() if lr != DEFAULT_LR}
        flat["lr"] = f"{DEFAULT_LR:g} (" + ", ".join(f"{m} {lr:g}" for m, lr in own.items()) + ")"
    return ", ".join(f"{k}={v}" for k, v in {**flat, **spec}.items())


def _format_seeds(seeds: list[int]) -> str:
    return ("seed " if len(seeds) == 1 else "seeds ") + ", ".join(map(str, seeds))


def _not_run_line(entries: list[dict[str, Any]]) -> str:
    """``Not run …: quanv seed 2 (started, 3/40 epochs), seeds 3, 4 (not started); …``."""
    by_model: dict[str, dict[str, list[int]]] = {}
    for entry in entries:
        by_model.setdefault(entry["model"], {}).setdefault(entry["status"], []).append(
            entry["seed"]
        )
    parts = [
        f"{model} "
        + ", ".join(f"{_format_seeds(seeds)} ({status})" for status, seeds in statuses.items())
        for model, statuses in by_model.items()
    ]
    return "Not run (no test metrics yet): " + "; ".join(parts) + "."


def _fmt(value: float | None, spec: str = "+.3f") -> str:
    return "–" if value is None else format(value, spec)


def _comparison_row(c: dict[str, Any]) -> str:
    metric = "AUC" if c["metric"] == "test_auc" else "ACC"
    pair = f"{c['quantum']} − {c['classical']}"
    if c["p_value"] is None:
        return f"| {pair} | {metric} | {c['n_pairs']} | – | – | – | – | – | – | {c['reading']} |"
    ci = c.get("ci95")
    interval = f"[{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else "–"
    return (
        f"| {pair} | {metric} | {c['n_pairs']} | {c['mean_difference']:+.4f} {interval} "
        f"| {_fmt(c['cohens_dz'], '+.2f')} | {_fmt(c['rank_biserial'], '+.2f')} "
        f"| {c['p_value']:.4f} | {c['p_floor']:.4g} | {c['p_holm']:.4f} | {c['reading']} |"
    )


def _holm_floor_line(comparisons: list[dict[str, Any]]) -> str:
    """What Holm's correction over this table's comparisons can detect at this n."""
    m = comparisons[0].get("family_size", 0)
    floor = comparisons[0].get("holm_floor")
    if not m or floor is None:
        return "Holm floor: no comparison of this table was tested."
    n_needed = min_pairs_to_reject(ALPHA, family_size=m)
    verdict = (
        f"≤ {ALPHA}: the table can reject"
        if floor <= ALPHA
        else f"> {ALPHA}: no comparison of this table can be declared different after the "
        f"correction at this n, whatever the models do; {n_needed} non-zero pairs per "
        "comparison are needed"
    )
    return (
        f"Holm floor of this table: {m} tested comparisons × the smallest p floor = "
        f"{floor:.4g} ({verdict})."
    )


def render_markdown(study: dict[str, Any]) -> str:
    """``results.md``: per-dataset tables with baselines, claims, and the paired comparisons."""
    finished_only = study.get("finished_only", False)
    n_min = min_pairs_to_reject(ALPHA)
    lines = [
        "# Reproduction study: quantum models vs their classical twins and classical baselines "
        "on MedMNIST (28×28)",
        "",
        f"Produced by `{study['command']}` on {study['finished']}. "
        f"Seeds{' planned' if finished_only else ''}: {', '.join(map(str, study['seeds']))}; "
        "n = seeds finished for that row. Test split read once per run "
        "(best-validation-AUC checkpoint). Raw numbers and every config: `results.json`.",
        "",
        "Recipe (shared by every model"
        + (
            "; per-model lr chosen on validation, docs/recipe.md"
            if isinstance(study["recipe"].get("lr"), dict)
            else ""
        )
        + "): "
        + describe_recipe(study["recipe"])
        + ".",
        "",
        "Each quantum model is compared with its parameter-matched classical twin, the same",
        "network with the quantum part replaced by a classical layer: hqcnn ↔ classical,",
        "quanv ↔ quanv-classical, qcnn ↔ qcnn-classical. Classical baselines trained by the same",
        "code and recipe: `backbone-head` (the same backbone and FC 256 with an ordinary",
        "classifier, no 4-value bottleneck) and `resnet18` (ResNet-18, 28×28 variant).",
        "",
        "How to read the comparisons: differences are the first model minus the second, paired",
        "by seed, with a 95 % paired bootstrap interval over seeds, Cohen's d_z and the",
        "matched-pairs rank-biserial r. p is the exact two-sided Wilcoxon signed-rank p; its",
        "floor is the smallest p attainable with that many non-zero pairs (2/2^n: at least",
        f"{n_min} pairs are needed to reach p ≤ {ALPHA}). Holm p is adjusted over every",
        "comparison of the table (both metrics); with m comparisons no adjusted p can fall",
        "below m × the smallest floor (the table's Holm floor, under each table), so a table",
        'needs more seeds than one test to reject. A non-rejection reads "no detectable',
        'difference at this n", never',
        '"no difference". The per-run interval is each run\'s own test-set bootstrap 95 % interval',
        f"of AUC ({TEST_BOOTSTRAPS} resamples of the test images), median over seeds.",
        "The figure under each table shows the same numbers: every run, with grey lines joining",
        "one seed's runs (the pairing), and every tested comparison's interval and Holm p.",
        "",
        "Train times are wall-clock on a shared 2-core machine (they include validation and vary",
        "with load); controlled step timings are in `docs/performance.md`.",
        "",
    ]
    if finished_only:
        lines += [
            "Tabulated from the finished cells only (`--finished-only`: nothing was trained).",
            "",
        ]
    if study["missing"]:
        lines += [
            f"Not run (file absent from the data directory): {', '.join(study['missing'])}.",
            "",
        ]
    not_run = study.get("not_run", [])
    for dataset in study["datasets"]:
        rows = [r for r in study["summary"] if r["dataset"] == dataset]
        lines += [
            f"## {dataset}",
            "",
            "| model | n | test ACC (mean ± std) | test AUC (mean ± std) "
            "| per-run AUC 95 % CI (median) | params classical / quantum "
            "| train wall time / run (median) | train wall time, all seeds |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            p = r["parameters"]
            ci = r.get("auc_run_ci95_median")
            interval = f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "–"
            total = r.get("train_seconds_total")
            lines.append(
                f"| {r['model']} | {r['n_seeds']} | {r['acc_mean']:.3f} ± {r['acc_std']:.3f} "
                f"| {r['auc_mean']:.3f} ± {r['auc_std']:.3f} | {interval} "
                f"| {p['classical']:,} / {p['quantum']}"
                f" | {r['train_seconds_median']:.0f} s | "
                + (f"{total / 60:.1f} min |" if total is not None else "– |")
            )
        for name, (auc, acc) in PUBLISHED_BASELINES.get(dataset, {}).items():
            lines.append(f"| {name} (published) | – | {acc:.3f} | {auc:.3f} | – | – | – | – |")
        if dataset in PAPER_CLAIMS:
            acc, auc, source = PAPER_CLAIMS[dataset]
            lines.append(
                f"| *{PAPER_LABEL}; {source}* | – | *{acc:.4f}* | "
                f"{'*' + format(auc, '.4f') + '*' if auc is not None else '–'} | – | – | – | – |"
            )
        noisy: dict[str, list[dict[str, Any]]] = {}
        for c in study["cells"]:
            if c["dataset"] == dataset and "noisy" in c:
                noisy.setdefault(c["model"], []).append(c)
        for model, group in noisy.items():
            acc = np.mean([c["noisy"]["test_acc"] for c in group])
            auc = np.mean([c["noisy"]["test_auc"] for c in group])
            lines.append(
                f"| {model} under {group[0]['noisy']['noise']} noise | {len(group)} "
                f"| {acc:.3f} | {auc:.3f} | – | – | – | – |"
            )
        lines.append("")
        odd = [c for c in study["cells"] if c["dataset"] == dataset and c.get("recipe_differences")]
        if odd:
            described = "; ".join(
                f"{c['model']} seed {c['seed']} ("
                + ", ".join(f"{k}={v[0]}" for k, v in c["recipe_differences"].items())
                + ")"
                for c in odd
            )
            lines += [f"Cells trained with another recipe than the one above: {described}.", ""]
        origin = describe_imported([c for c in study["cells"] if c["dataset"] == dataset])
        if origin:
            lines += [origin, ""]
        missing_cells = [e for e in not_run if e["dataset"] == dataset]
        if missing_cells:
            lines += [_not_run_line(missing_cells), ""]
        comparisons = study.get("comparisons", {}).get(dataset, [])
        if comparisons:
            lines += [
                "| comparison | metric | n | mean difference [95 % CI] | d_z | rank-biserial r "
                "| Wilcoxon p | p floor at n | Holm p | reading |",
                "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
                *(_comparison_row(c) for c in comparisons),
                "",
                _holm_floor_line(comparisons),
                "",
            ]
        for test in study["paired_tests"].get(dataset, {}).values():
            pair = f"{test['quantum']} vs {test['classical']}"
            if test["p_value"] is not None:
                lines.append(
                    f"Wilcoxon signed-rank, {pair}, test AUC paired by seed: "
                    f"mean difference {test['mean_difference']:+.4f}, p = {test['p_value']:.4f} "
                    f"({test['n_pairs']} pairs; smallest attainable p at this n: "
                    f"{test['p_floor']:.4g}), Holm p = {test['p_holm']:.4f}: {test['reading']}."
                )
            else:
                lines.append(
                    f"Wilcoxon signed-rank, {pair}: not computed, {test['n_pairs']} seed(s) "
                    "finished for both (at least 2 needed)."
                )
            lines.append("")
        if dataset in datasets_with_runs(study):
            lines += [
                f"![{dataset}: every seed's test ACC and AUC, and the paired differences with "
                f"their 95 % intervals and Holm p]({figure_path(dataset)})",
                "",
            ]
        lines += _target_lines(study, dataset)
    lines += [paper_claims_note(study["datasets"]), ""]
    return "\n".join(lines)


def datasets_with_runs(study: dict[str, Any]) -> list[str]:
    """The study's datasets that have at least one finished run (each gets a figure)."""
    return [d for d in study["datasets"] if any(c["dataset"] == d for c in study["cells"])]


def figure_path(dataset: str) -> str:
    """Where a study's figure of ``dataset`` lies, relative to its ``results.md``."""
    return f"figures/study_{dataset}.png"


def write_figures(study: dict[str, Any], folders: list[Path]) -> list[Path]:
    """Draw each dataset's figure (:func:`qhqcnn.reporting.study_figure.plot_study`) and save it
    under every folder of ``folders`` at :func:`figure_path` (beside each ``results.md``)."""
    from qhqcnn.reporting.plots import save_figure
    from qhqcnn.reporting.study_figure import plot_study

    written = []
    for dataset in datasets_with_runs(study):
        fig = plot_study(study, dataset, target=TARGETS.get(dataset))
        first, *others = (folder / figure_path(dataset) for folder in folders)
        # drawn once (few colours: a 256-colour PNG, about 3x smaller), then copied byte for byte
        written.append(save_figure(fig, first, palette=True))
        for path in others:
            written.append(atomic_write(path, lambda tmp, src=first: shutil.copyfile(src, tmp)))
    return written


def paper_claims_note(datasets: list[str]) -> str:
    """What the claim rows are, or, when no dataset of the study has one, that there is none."""
    if any(d in PAPER_CLAIMS for d in datasets):
        return PAPER_CLAIMS_NOTE
    return (
        f"The HQCNN paper (arXiv 2509.14277 v1) states no number that can be cited for "
        f"{', '.join(datasets)} (../shared/notes/hqcnn-paper.md), so this study has no claim row."
    )


def _target_lines(study: dict[str, Any], dataset: str) -> list[str]:
    """Each target model's mean test ACC/AUC against the targets for ``dataset``, met or
    missed, to 4 decimals (one line per model in the study)."""
    target = TARGETS.get(dataset)
    if target is None:
        return []
    lines = []
    for model in TARGET_MODELS:
        row = next(
            (r for r in study["summary"] if r["dataset"] == dataset and r["model"] == model), None
        )
        if row is None:
            continue
        parts = []
        for name, goal, value in (
            ("ACC", target[0], row["acc_mean"]),
            ("AUC", target[1], row["auc_mean"]),
        ):
            verdict = "met" if value >= goal else "missed"
            parts.append(f"{name} {value:.4f} vs ≥ {goal} ({verdict})")
        lines += [
            f"Target for {model} (mean of {row['n_seeds']} seed(s)): " + "; ".join(parts) + ".",
            "",
        ]
    return lines


def _run_cells_in_parallel(
    plan: StudyPlan,
    out: Path,
    cells: list[CellKey],
    workers: int,
    *,
    data_dir: str | None,
    cache: bool,
    cache_dir: str | Path | None,
) -> list[dict[str, Any]]:
    """The ``cells`` of ``plan`` in ``workers`` spawned processes; results in that order. A failing
    cell does not stop the others (they finish and stay reusable); its error is raised after."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    options = {"data_dir": data_dir, "cache": cache, "cache_dir": cache_dir}
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = [
            pool.submit(run_cell, plan, out, *cell, progress=False, **options) for cell in cells
        ]
        print(f"== {len(futures)} cells in {workers} worker processes")
        return [future.result() for future in futures]


def run_study(
    plan: StudyPlan,
    out: str | Path,
    *,
    data_dir: str | None = None,
    missing: list | None = None,
    docs_path: str | Path | None = None,
    command: str = "qhqcnn reproduce",
    progress: bool = True,
    finished_only: bool = False,
    cache: bool = True,
    cache_dir: str | Path | None = None,
    workers: int = 1,
    imported: dict[CellKey, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Run every cell of ``plan`` (reusing finished ones) and write the result files.

    With ``finished_only``, nothing is trained or evaluated: the cells with test metrics are
    tabulated and the others listed under ``not_run`` (with their status). ``workers`` > 1 runs
    the cells in that many worker processes (no progress bars); the tables are the same.
    ``imported`` (from :func:`qhqcnn.study.imported.load_imported_cells`): finished cells
    recorded by another study; each is tabulated as recorded and not trained again, unless this
    study's ``out`` has its own finished run of that cell (which is then used instead).
    """
    if not plan.datasets:
        raise ConfigError("no dataset file found in the data directory; nothing to reproduce")
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    out = Path(out)
    imported = imported or {}
    cells, not_run = [], []
    # a cell is trained (or resumed, or read back) here unless only an imported record has it
    here = [
        cell
        for cell in plan.cells()
        if cell not in imported or RunDir(cell_dir(out, *cell)).metrics_path("test").exists()
    ]
    done: dict[CellKey, dict[str, Any]] = {}
    if workers > 1 and not finished_only:
        finished = _run_cells_in_parallel(
            plan, out, here, workers, data_dir=data_dir, cache=cache, cache_dir=cache_dir
        )
        done = dict(zip(here, finished, strict=True))
    for dataset, model, seed in plan.cells():
        key = (dataset, model, seed)
        run = cell_dir(out, dataset, model, seed)
        if key in done:
            cells.append(done[key])
        elif key not in here:
            cells.append(_imported_cell(plan, imported[key]))
        elif RunDir(run).metrics_path("test").exists() or not finished_only:
            if not finished_only:
                print(f"== {dataset} / {model} / seed {seed}")
            cells.append(
                run_cell(
                    plan,
                    out,
                    dataset,
                    model,
                    seed,
                    data_dir=data_dir,
                    progress=progress,
                    cache=cache,
                    cache_dir=cache_dir,
                    evaluate_noise=not finished_only,
                )
            )
        else:
            not_run.append(
                {
                    "dataset": dataset,
                    "model": model,
                    "seed": seed,
                    "run": str(run),
                    "status": cell_status(run),
                }
            )
    comparisons = {d: compare_all(cells, d, plan.comparisons()) for d in plan.datasets}
    twins = plan.pairs()
    study = {
        "command": command,
        "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "finished_only": finished_only,
        "datasets": plan.datasets,
        "missing": missing or [],
        "models": plan.models,
        "seeds": plan.seeds,
        "noise": plan.noise,
        "recipe": plan.recipe_record(),
        "cells": cells,
        "not_run": not_run,
        "summary": summarize(cells),
        # each twin pair's AUC test is its row of the table (Holm-corrected), not a recomputation
        "paired_tests": {
            d: {
                c["quantum"]: c
                for c in comparisons[d]
                if c["metric"] == "test_auc" and (c["quantum"], c["classical"]) in twins
            }
            for d in plan.datasets
        },
        "comparisons": comparisons,
        "paper_claims": {d: PAPER_CLAIMS[d] for d in plan.datasets if d in PAPER_CLAIMS},
        "published_baselines": {d: PUBLISHED_BASELINES.get(d, {}) for d in plan.datasets},
        "environment": environment_record(),
    }
    atomic_write_json(out / "results.json", study)
    markdown = render_markdown(study)
    atomic_write_text(out / "results.md", markdown)
    folders = [out]
    if docs_path is not None:
        atomic_write_text(docs_path, markdown)
        atomic_write_json(Path(docs_path).with_suffix(".json"), study)
        folders.append(Path(docs_path).parent)
    write_figures(study, folders)
    return study
