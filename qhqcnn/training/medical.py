"""Medical-imaging conventions of the training recipe, each one a config option.

* **Class imbalance** (``TrainConfig.class_balance``): ``weights`` weighs the loss by inverse
  class frequency (multi-label: ``pos_weight = negatives / positives`` per label); ``sampler``
  draws each epoch's images with replacement, with probability inversely proportional to their
  class's frequency (single-label tasks, one process).
* **Anatomy-aware augmentation** (``TrainConfig.augment = "anatomy"``): small rotations and
  translations, and only the flips that are anatomically plausible for the dataset's modality
  (:data:`AUGMENT_POLICIES`; the table is printed in docs/recipe.md). ``flip`` (both axes) is
  kept as it was.
* **Ordinal loss** (``TrainConfig.loss = "ordinal"``, RetinaMNIST's ordinal-regression task):
  cross-entropy plus the squared earth mover's distance between the predicted and the true
  class CDF (Hou et al., 2016), so predicting grade 4 for a grade-0 eye costs more than
  predicting grade 1. The outputs stay softmax scores, so medmnist's ACC/AUC read them as
  before.

Every default is the recipe's previous behaviour (``none``, ``flip``, ``ce``). On the validation
splits (docs/recipe.md) BreastMNIST keeps them and RetinaMNIST is better with ``loss="ordinal"``;
class weights raised validation AUC but lowered ACC on both, the anatomy policy lowered AUC.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from qhqcnn.data.augment import (
    AUGMENT_POLICIES,
    DEFAULT_POLICY,
    AugmentPolicy,
    apply_anatomy_augment,
    augment_policy,
    policy_table,
)
from qhqcnn.training.metrics import MULTI_LABEL

CLASS_BALANCE = ("none", "weights", "sampler")
LOSSES = ("ce", "ordinal")
ORDINAL_TASK = "ordinal-regression"

__all__ = [
    "AUGMENT_POLICIES",
    "DEFAULT_POLICY",
    "AugmentPolicy",
    "OrdinalLoss",
    "apply_anatomy_augment",
    "augment_policy",
    "class_weights",
    "policy_table",
    "sample_weights",
    "training_loss",
]


def class_counts(labels: torch.Tensor, task: str, n_classes: int) -> torch.Tensor:
    """Images per class (single-label) or positives per label (multi-label)."""
    if task == MULTI_LABEL:
        return labels.float().sum(0)
    return torch.bincount(labels.long().reshape(-1), minlength=n_classes).float()


def class_weights(labels: torch.Tensor, task: str, n_classes: int) -> torch.Tensor:
    """Single-label: ``n / (K · count_k)`` (1 for an absent class). Multi-label:
    ``pos_weight = negatives / positives`` per label (1 where a label has no positive)."""
    counts = class_counts(labels, task, n_classes)
    n = float(labels.shape[0])
    if task == MULTI_LABEL:
        return torch.where(counts > 0, (n - counts) / counts.clamp(min=1), torch.ones_like(counts))
    return torch.where(counts > 0, n / (n_classes * counts.clamp(min=1)), torch.ones_like(counts))


def sample_weights(labels: torch.Tensor, task: str, n_classes: int) -> torch.Tensor:
    """Per-image sampling weight ``1 / count(class)`` (each class equally likely per draw)."""
    if task == MULTI_LABEL:
        raise ValueError("a balanced sampler is defined for single-label tasks only")
    counts = class_counts(labels, task, n_classes)
    return 1.0 / counts[labels.long().reshape(-1)]


class OrdinalLoss(nn.Module):
    """Cross-entropy + ``emd_weight`` · squared EMD between softmax and one-hot class CDFs."""

    def __init__(self, weight: torch.Tensor | None = None, emd_weight: float = 1.0) -> None:
        super().__init__()
        self.ce = nn.CrossEntropyLoss(weight=weight)
        self.emd_weight = emd_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(logits, dim=1)
        onehot = F.one_hot(target.long(), logits.shape[1]).to(probs.dtype)
        emd = ((probs.cumsum(1) - onehot.cumsum(1)) ** 2).sum(1).mean()
        return self.ce(logits, target) + self.emd_weight * emd


def training_loss(task: str, *, loss: str = "ce", weights: torch.Tensor | None = None) -> nn.Module:
    """The training loss of a config: CE (optionally weighted), BCE with ``pos_weight`` for
    multi-label, or the ordinal loss."""
    if task == MULTI_LABEL:
        if loss != "ce":
            raise ValueError("the ordinal loss is for single-label tasks")
        return nn.BCEWithLogitsLoss(pos_weight=weights)
    if loss == "ordinal":
        return OrdinalLoss(weight=weights)
    return nn.CrossEntropyLoss(weight=weights)
