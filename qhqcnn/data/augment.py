"""Anatomy-aware augmentation: which flips are plausible for which modality, plus a small
random rotation and translation (``TrainConfig.augment = "anatomy"``; docs/recipe.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F


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
