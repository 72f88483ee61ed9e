"""Scoring a model on a split: loss, class scores and MedMNIST metrics (train and evaluate)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from qhqcnn.data.batches import ImageSource, eval_batches
from qhqcnn.errors import TrainingError
from qhqcnn.training.distributed import SINGLE_PROCESS, DistributedContext, gather_rows, shard
from qhqcnn.training.medical import training_loss
from qhqcnn.training.metrics import medmnist_metrics, scores_from_logits


@dataclass(frozen=True)
class SplitScore:
    loss: float
    acc: float
    auc: float
    y_score: np.ndarray

    def metrics(self) -> dict[str, float]:
        return {"loss": self.loss, "acc": self.acc, "auc": self.auc}


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    images: ImageSource,
    batch_size: int,
    *,
    rows: slice = slice(None),
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Eval-mode logits (on the CPU) of ``images[rows]``, batch by batch on ``device``."""
    model.eval()
    outputs = [
        model(batch.to(device)).cpu() for batch in eval_batches(images, batch_size, rows=rows)
    ]
    return torch.cat(outputs) if outputs else torch.empty(0)


def score_split(
    model: nn.Module,
    images: ImageSource,
    labels: torch.Tensor,
    task: str,
    batch_size: int = 256,
    *,
    context: DistributedContext = SINGLE_PROCESS,
    device: torch.device | str = "cpu",
) -> SplitScore:
    """Loss, ACC and AUC of ``model`` on one split, in eval mode. Distributed: each rank
    predicts its share and all ranks score the gathered predictions (identical results)."""
    rows = shard(images.shape[0], context)
    logits = gather_rows(
        predict_logits(model, images, batch_size, rows=rows, device=device), context
    )
    if not torch.isfinite(logits).all():
        bad = int((~torch.isfinite(logits)).any(dim=-1).sum()) if logits.ndim > 1 else 0
        raise TrainingError(
            f"the model's predictions are not finite ({bad} of {logits.shape[0]} images give "
            "NaN or inf): its weights diverged. Nothing was scored or written; try a lower "
            "--lr / --quantum-lr."
        )
    # the plain (unweighted) loss: comparable across recipes and with the published curves
    loss = float(training_loss(task)(logits, labels))
    y_score = scores_from_logits(logits, task)
    metrics = medmnist_metrics(labels.numpy(), y_score, task)
    return SplitScore(loss=loss, acc=metrics["acc"], auc=metrics["auc"], y_score=y_score)
