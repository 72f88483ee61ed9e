"""Evaluation of a trained run on a split, on its own backend or any other one."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from qhqcnn.backends.base import make_backend
from qhqcnn.errors import RunNotFoundError
from qhqcnn.io.files import atomic_save_npz, atomic_write_json
from qhqcnn.training.scoring import score_split
from qhqcnn.training.trainer import BEST_CHECKPOINT, load_data, model_for_config, run_dir_config

SPLITS = ("train", "val", "test")


def result_tag(backend: str | None, options: dict[str, Any] | None) -> str:
    """File-name suffix for results on a non-default backend (``""`` for the run's own)."""
    if backend is None:
        return ""
    parts = [backend] + [str(v) for _, v in sorted((options or {}).items()) if v is not None]
    return "_" + re.sub(r"[^A-Za-z0-9.-]+", "-", "-".join(parts))


def load_trained_model(run_dir: str | Path, info, config, backend=None):
    """The run's model with its best checkpoint loaded, on ``backend`` (default: its own)."""
    checkpoint = Path(run_dir) / BEST_CHECKPOINT
    if not checkpoint.exists():
        raise RunNotFoundError(f"{run_dir} has no {BEST_CHECKPOINT}: it finished no epoch yet")
    model = model_for_config(config, info, backend)
    state = torch.load(checkpoint, weights_only=False)
    model.load_state_dict(state["model"])
    model.eval()
    return model, state["epoch"]


def evaluate_run(
    run_dir: str | Path,
    split: str = "test",
    *,
    data_dir: str | None = None,
    backend: str | None = None,
    backend_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """ACC/AUC of the run's best checkpoint on ``split``; writes ``metrics_<split><tag>.json``
    and ``predictions_<split><tag>.npz`` (``y_true``, ``y_score``) into the run directory."""
    run_dir = Path(run_dir)
    config = run_dir_config(run_dir)
    data = load_data(config, data_dir, splits=(split,))
    target = make_backend(backend, **(backend_options or {})) if backend else None
    model, epoch = load_trained_model(run_dir, data.info, config, target)
    tensors = data.splits[split]
    score = score_split(model, tensors.images, tensors.labels, data.info.task)
    result = {
        "run": str(run_dir),
        "dataset": config.dataset,
        "relabel": config.relabel,
        "model": config.model.model,
        "split": split,
        "backend": backend or config.backend,
        "backend_options": backend_options if backend else config.backend_options,
        "checkpoint_epoch": epoch,
        "n_images": int(tensors.images.shape[0]),
        **score.metrics(),
    }
    tag = result_tag(backend, backend_options)
    atomic_write_json(run_dir / f"metrics_{split}{tag}.json", result)
    y_true = tensors.labels.numpy()
    atomic_save_npz(run_dir / f"predictions_{split}{tag}.npz", y_true=y_true, y_score=score.y_score)
    if not tag:
        result["medmnist_file"] = str(
            write_medmnist_result(run_dir, config, split, score.y_score, result)
        )
        atomic_write_json(run_dir / f"metrics_{split}{tag}.json", result)
    return result


def medmnist_result_name(config, split: str, auc: float, acc: float) -> str:
    """medmnist's standard result-file name,
    ``{flag}{size_flag}_{split}_[AUC]{auc:.3f}_[ACC]{acc:.3f}@{run}.csv`` (as
    ``medmnist.Evaluator.get_standard_evaluation_filename``); ``run`` is ``MODEL-sSEED``."""
    size_flag = "" if config.size == 28 else f"_{config.size}"
    run = re.sub(r"[^A-Za-z0-9-]+", "-", f"{config.model.model}-s{config.seed}")
    return f"{config.dataset}{size_flag}_{split}_[AUC]{auc:.3f}_[ACC]{acc:.3f}@{run}.csv"


def write_medmnist_result(run_dir: Path, config, split: str, y_score, metrics) -> Path:
    """The scores in medmnist's ``Evaluator`` result-file format (one row per image: index,
    then the scores; no header), beside ``metrics_<split>.json``; an earlier file of the same
    split is replaced. medmnist's ``Evaluator.parse_and_evaluate`` reads it (full splits)."""
    import pandas as pd

    for old in run_dir.glob(f"{config.dataset}*_{split}_*@*.csv"):
        old.unlink()
    path = run_dir / medmnist_result_name(config, split, metrics["auc"], metrics["acc"])
    pd.DataFrame(y_score).to_csv(path, header=False)
    return path


def format_metrics_table(results: list[dict[str, Any]]) -> str:
    """A plain-text table of evaluation results."""
    header = f"{'dataset':<16}{'model':<16}{'backend':<22}{'split':<7}{'n':>6}{'ACC':>8}{'AUC':>8}"
    lines = [header, "-" * len(header)]
    for r in results:
        lines.append(
            f"{r['dataset']:<16}{r['model']:<16}{r['backend']:<22}{r['split']:<7}"
            f"{r['n_images']:>6}{r['acc']:>8.4f}{r['auc']:>8.4f}"
        )
    return "\n".join(lines)
