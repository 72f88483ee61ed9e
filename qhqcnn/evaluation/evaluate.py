"""Evaluation: a trained run (its best checkpoint) or any model, on its own backend or another.

ACC and AUC are medmnist's own (``medmnist.Evaluator``'s ``getACC``/``getAUC``) for the
dataset's task type.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from qhqcnn.backends.base import make_backend
from qhqcnn.data.arrays import ArrayDataset
from qhqcnn.data.batches import images_to_tensor, labels_to_tensor
from qhqcnn.data.medmnist import SPLITS
from qhqcnn.errors import RunNotFoundError
from qhqcnn.training.rundir import RunDir, load_model_state
from qhqcnn.training.scoring import SplitScore, score_split
from qhqcnn.training.trainer import load_data, model_for_config

__all__ = [
    "SPLITS",
    "evaluate_model",
    "evaluate_run",
    "format_metrics_table",
    "load_trained_model",
    "result_tag",
]


def result_tag(backend: str | None, options: dict[str, Any] | None) -> str:
    """File-name suffix for results on a non-default backend (``""`` for the run's own)."""
    if backend is None:
        return ""
    parts = [backend] + [str(v) for _, v in sorted((options or {}).items()) if v is not None]
    return "_" + re.sub(r"[^A-Za-z0-9.-]+", "-", "-".join(parts))


def load_trained_model(run_dir: str | Path, info, config, backend=None):
    """The run's model with its best checkpoint loaded, on ``backend`` (default: its own).

    The checkpoint is loaded onto the CPU, so a run trained on CUDA evaluates anywhere. It is
    checked against the SHA-256 recorded when it was written: a corrupt or foreign checkpoint
    raises :class:`~qhqcnn.errors.IntegrityError`.
    Returns ``(model, epoch of the checkpoint)``.
    """
    run = RunDir(run_dir)
    checkpoint = run.best_checkpoint
    if not checkpoint.exists():
        raise RunNotFoundError(f"{run_dir} has no {RunDir.BEST}: it finished no epoch yet")
    state = run.load_checkpoint(checkpoint)
    model = model_for_config(config, info, backend)
    load_model_state(model, state, checkpoint)
    model.eval()
    return model, state.get("epoch")


def evaluate_model(
    model: nn.Module,
    images: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    task: str,
    *,
    batch_size: int = 256,
) -> SplitScore:
    """Loss, ACC and AUC of any model on images and labels, as ``medmnist.Evaluator`` scores.

    Args:
        model: maps a float batch ``(B, C, H, W)`` in [−1, 1] to logits.
        images: uint8 ``(N, H, W[, C])`` (MedMNIST's layout, normalised here) or a float
            tensor ``(N, C, H, W)`` already normalised.
        labels: ``(N,)``/``(N, 1)`` class indices, or ``(N, L)`` multi-label targets.
        task: the MedMNIST task type (``"binary-class"``, ``"multi-class"``,
            ``"ordinal-regression"``, ``"multi-label, binary-class"``).

    Returns:
        a :class:`~qhqcnn.training.scoring.SplitScore` (``loss``, ``acc``, ``auc``,
        ``y_score``).
    """
    if isinstance(images, np.ndarray):
        images = images_to_tensor(images if images.ndim == 4 else images[..., None])
    label_tensor = labels_to_tensor(np.asarray(labels), task)
    return score_split(model, images, label_tensor, task, batch_size)


def evaluate_run(
    run_dir: str | Path,
    split: str = "test",
    *,
    data: ArrayDataset | None = None,
    data_dir: str | None = None,
    backend: str | None = None,
    backend_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """ACC/AUC of the run's best checkpoint on ``split``.

    Writes ``metrics_<split><tag>.json`` and ``predictions_<split><tag>.npz`` (``y_true``,
    ``y_score``) into the run directory; ``tag`` names the backend when it is not the run's own.

    Args:
        run_dir: a run directory written by training.
        split: ``"train"``, ``"val"`` or ``"test"``.
        data: the user's own dataset the run was trained on (``None``: its MedMNIST set).
        data_dir: where the MedMNIST files are.
        backend, backend_options: evaluate on this backend instead of the run's own (e.g.
            ``"aer"`` with ``{"noise": "fake_torino"}``).

    Returns:
        the metrics record that was written.
    """
    run = RunDir(run_dir)
    config = run.config()
    with run.lock():
        return _evaluate_locked(run, config, split, data, data_dir, backend, backend_options)


def _evaluate_locked(run, config, split, data, data_dir, backend, backend_options):
    prepared = load_data(config, data_dir, splits=(split,), data=data)
    target = make_backend(backend, **(backend_options or {})) if backend else None
    model, epoch = load_trained_model(run.path, prepared.info, config, target)
    tensors = prepared.splits[split]
    score = score_split(model, tensors.images, tensors.labels, prepared.info.task)
    result = {
        "run": str(run.path),
        "dataset": config.dataset if data is None else data.name,
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
    if not tag and data is None:  # a MedMNIST set: also medmnist's own result file
        result["medmnist_file"] = str(
            write_medmnist_result(run.path, config, split, score.y_score, result)
        )
    text = json.dumps(result, indent=2, default=str) + "\n"
    run.save_file(run.metrics_path(split, tag), lambda tmp: tmp.write_text(text, "utf-8"))
    y_true = tensors.labels.numpy()

    def write_npz(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.savez(handle, y_true=y_true, y_score=score.y_score)

    run.save_file(run.predictions_path(split, tag), write_npz)
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
