"""Scoring a model on a split: loss, class scores and MedMNIST metrics (train and evaluate)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from qhqcnn.batches import eval_batches
from qhqcnn.metrics import MULTI_LABEL, medmnist_metrics, scores_from_logits


def loss_function(task: str) -> nn.Module:
    """Cross-entropy for binary/multi-class/ordinal tasks, BCE-with-logits for multi-label."""
    return nn.BCEWithLogitsLoss() if task == MULTI_LABEL else nn.CrossEntropyLoss()


@dataclass(frozen=True)
class SplitScore:
    loss: float
    acc: float
    auc: float
    y_score: np.ndarray

    def metrics(self) -> dict[str, float]:
        return {"loss": self.loss, "acc": self.acc, "auc": self.auc}


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    model.eval()
    return torch.cat([model(batch) for batch in eval_batches(images, batch_size)])


def score_split(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    task: str,
    batch_size: int = 256,
) -> SplitScore:
    """Loss, ACC and AUC of ``model`` on one split, in eval mode."""
    logits = predict_logits(model, images, batch_size)
    loss = float(loss_function(task)(logits, labels))
    y_score = scores_from_logits(logits, task)
    metrics = medmnist_metrics(labels.numpy(), y_score, task)
    return SplitScore(loss=loss, acc=metrics["acc"], auc=metrics["auc"], y_score=y_score)
