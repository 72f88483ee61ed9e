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

Every default is the recipe's previous behaviour (``none``, ``flip``, ``ce``): none of these
options has been chosen on validation data yet (docs/recipe.md says so).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from qhqcnn.training.metrics import MULTI_LABEL

CLASS_BALANCE = ("none", "weights", "sampler")
LOSSES = ("ce", "ordinal")
ORDINAL_TASK = "ordinal-regression"


@dataclass(frozen=True)
class AugmentPolicy:
    """What ``augment="anatomy"`` may do to one dataset's images."""

    modality: str
    hflip: bool
    vflip: bool
    rotate_degrees: float
    translate_pixels: float
    why: str


_NO_FLIP_XRAY = "left/right anatomy (heart, liver) is not symmetric; never upside down"
#: Per dataset: modality, which flips are plausible, and the small rotation/translation range.
AUGMENT_POLICIES: dict[str, AugmentPolicy] = {
    "breastmnist": AugmentPolicy(
        "breast ultrasound", True, False, 10, 2,
        "probe orientation / left vs right breast mirror; skin is always at the top",
    ),
    "pneumoniamnist": AugmentPolicy("chest X-ray", False, False, 10, 2, _NO_FLIP_XRAY),
    "chestmnist": AugmentPolicy("chest X-ray", False, False, 10, 2, _NO_FLIP_XRAY),
    "organamnist": AugmentPolicy("abdominal CT (axial)", False, False, 10, 2, _NO_FLIP_XRAY),
    "organcmnist": AugmentPolicy("abdominal CT (coronal)", False, False, 10, 2, _NO_FLIP_XRAY),
    "organsmnist": AugmentPolicy("abdominal CT (sagittal)", False, False, 10, 2,
                                 "anterior/posterior and head/feet are fixed"),
    "retinamnist": AugmentPolicy(
        "fundus photograph", True, False, 15, 2,
        "a left eye is a mirrored right eye; superior/inferior retina differ",
    ),
    "octmnist": AugmentPolicy(
        "retinal OCT B-scan", True, False, 5, 2,
        "nasal/temporal mirror is plausible; retinal layers have a fixed depth order",
    ),
    "bloodmnist": AugmentPolicy("blood-smear microscopy", True, True, 180, 2,
                                "cells on a slide have no orientation"),
    "pathmnist": AugmentPolicy("colon histology", True, True, 180, 2,
                               "tissue patches have no orientation"),
    "tissuemnist": AugmentPolicy("kidney cortex microscopy", True, True, 180, 2,
                                 "cells have no orientation"),
    "dermamnist": AugmentPolicy("dermatoscopy", True, True, 180, 2,
                                "skin lesions have no canonical orientation"),
}  # fmt: skip
#: For a dataset absent from the table: no flips, small affine only.
DEFAULT_POLICY = AugmentPolicy("unknown", False, False, 10, 2, "no flip assumed plausible")


def augment_policy(dataset: str) -> AugmentPolicy:
    return AUGMENT_POLICIES.get(dataset.lower(), DEFAULT_POLICY)


def policy_table() -> str:
    """The Markdown table of :data:`AUGMENT_POLICIES` (docs/recipe.md)."""
    lines = [
        "| dataset | modality | horizontal flip | vertical flip | rotation | translation | why |",
        "|---|---|---|---|---:|---:|---|",
    ]
    for name, p in AUGMENT_POLICIES.items():
        lines.append(
            f"| {name} | {p.modality} | {'yes' if p.hflip else 'no'} | "
            f"{'yes' if p.vflip else 'no'} | ±{p.rotate_degrees:g}° | ±{p.translate_pixels:g} px "
            f"| {p.why} |"
        )
    return "\n".join(lines)


def apply_anatomy_augment(
    images: torch.Tensor, policy: AugmentPolicy, generator: torch.Generator
) -> torch.Tensor:
    """The policy's random flips, rotation and translation of a batch (draws from
    ``generator``, so an epoch's augmentation is reproducible and resume-safe)."""
    n, _, height, width = images.shape
    draws = torch.rand(n, 5, generator=generator)
    out = images.clone()
    if policy.hflip:
        mask = draws[:, 0] < 0.5
        out[mask] = out[mask].flip(-1)
    if policy.vflip:
        mask = draws[:, 1] < 0.5
        out[mask] = out[mask].flip(-2)
    angle = (draws[:, 2] * 2 - 1) * math.radians(policy.rotate_degrees)
    shift_x = (draws[:, 3] * 2 - 1) * policy.translate_pixels * 2 / width
    shift_y = (draws[:, 4] * 2 - 1) * policy.translate_pixels * 2 / height
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack(
        [torch.stack([cos, -sin, shift_x], 1), torch.stack([sin, cos, shift_y], 1)], 1
    ).to(out.dtype)
    grid = F.affine_grid(theta, list(out.shape), align_corners=False)
    return F.grid_sample(out, grid, padding_mode="border", align_corners=False)


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
