"""MedMNIST-standard metrics: ACC and AUC computed with medmnist's own functions."""

from __future__ import annotations

import numpy as np
import torch

from qhqcnn.data import medmnist_info
from qhqcnn.data.medmnist import MULTI_LABEL_TASK as MULTI_LABEL

__all__ = ["MULTI_LABEL", "medmnist_metrics", "scores_from_logits"]


def scores_from_logits(logits: torch.Tensor, task: str) -> np.ndarray:
    """Class scores as medmnist's evaluator expects: softmax, or sigmoid for multi-label."""
    if task == MULTI_LABEL:
        return torch.sigmoid(logits).detach().cpu().double().numpy()
    return torch.softmax(logits.double(), dim=1).detach().cpu().numpy()


def medmnist_metrics(y_true: np.ndarray, y_score: np.ndarray, task: str) -> dict[str, float]:
    """``{"acc", "auc"}`` exactly as ``medmnist.Evaluator`` computes them for ``task``."""
    y_true = np.asarray(y_true)
    if y_true.ndim == 1:
        y_true = y_true[:, None]
    return {
        "acc": float(medmnist_info.getACC(y_true, y_score, task)),
        "auc": float(medmnist_info.getAUC(y_true, y_score, task)),
    }
