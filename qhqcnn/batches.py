"""From uint8 image arrays to normalised torch batches, with seeded shuffling and augmentation."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from qhqcnn.metrics import MULTI_LABEL


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 N×H×W×C → float32 N×C×H×W scaled to [−1, 1] (MedMNIST's mean 0.5 / std 0.5)."""
    tensor = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    return tensor.div_(255.0).sub_(0.5).div_(0.5).contiguous()


def labels_to_tensor(labels: np.ndarray, task: str) -> torch.Tensor:
    """Class indices (int64) for single-label tasks, float targets for multi-label."""
    if task == MULTI_LABEL:
        return torch.from_numpy(np.asarray(labels)).float()
    return torch.from_numpy(np.asarray(labels).reshape(-1)).long()


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator that decides epoch ``epoch``'s order and augmentation (resume-safe)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def random_flips(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip each image horizontally and/or vertically with probability 1/2 each."""
    flips = torch.rand(images.shape[0], 2, generator=generator) < 0.5
    out = images.clone()
    horizontal, vertical = flips[:, 0], flips[:, 1]
    out[horizontal] = out[horizontal].flip(-1)
    out[vertical] = out[vertical].flip(-2)
    return out


def train_batches(
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
    *,
    augment: str = "none",
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled mini-batches; a final batch of one image is merged into the previous one
    (BatchNorm cannot train on a single image)."""
    order = torch.randperm(images.shape[0], generator=generator)
    starts = list(range(0, len(order), batch_size))
    if len(starts) > 1 and len(order) - starts[-1] == 1:
        starts.pop()
    for i, start in enumerate(starts):
        stop = starts[i + 1] if i + 1 < len(starts) else len(order)
        index = order[start:stop]
        batch = images[index]
        if augment == "flip":
            batch = random_flips(batch, generator)
        yield batch, labels[index]


def eval_batches(images: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    for start in range(0, images.shape[0], batch_size):
        yield images[start : start + batch_size]
