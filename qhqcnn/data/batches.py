"""From uint8 image arrays to normalised torch batches, with seeded shuffling and augmentation."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from qhqcnn.data.medmnist import MULTI_LABEL_TASK as MULTI_LABEL


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 N×H×W×C → float32 N×C×H×W scaled to [−1, 1] (MedMNIST's mean 0.5 / std 0.5)."""
    tensor = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    tensor = tensor.to(torch.float32, copy=True)  # never normalise the caller's array in place
    return tensor.div_(255.0).sub_(0.5).div_(0.5).contiguous()


def labels_to_tensor(labels: np.ndarray, task: str) -> torch.Tensor:
    """Class indices (int64) for single-label tasks, float targets for multi-label."""
    if task == MULTI_LABEL:
        return torch.from_numpy(np.asarray(labels)).float()
    return torch.from_numpy(np.asarray(labels).reshape(-1)).long()


class MappedImages:
    """Normalised float images ``(N, C, H, W)`` read on demand from a uint8 ``(N, H, W, C)``
    array (typically memory-mapped): indexing with a slice or an index array converts just
    those images, so a split larger than RAM can be trained on."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    @property
    def shape(self) -> torch.Size:
        n, height, width, channels = self.array.shape
        return torch.Size((n, channels, height, width))

    def __len__(self) -> int:
        return self.array.shape[0]

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, torch.Tensor):
            index = index.numpy()
        return images_to_tensor(np.array(self.array[index]))  # a private, writable copy


ImageSource = torch.Tensor | MappedImages


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator that decides epoch ``epoch``'s order and augmentation (resume-safe)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def epoch_order(n: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1) -> list[int]:
    """This rank's images of epoch ``epoch``, by torch's ``DistributedSampler``.

    Its permutation is ``randperm(n)`` of :func:`epoch_generator` (the single-process order), and
    rank r gets positions r, r + W, r + 2W, … (padded to a multiple of W), so the union of the
    ranks' k-th local batches is the single-process k-th batch.
    """
    from torch.utils.data import DistributedSampler

    sampler = DistributedSampler(
        range(n), num_replicas=world_size, rank=rank, shuffle=True, seed=seed * 1_000_003
    )
    sampler.set_epoch(epoch)
    return list(sampler)


def apply_flips(images: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Flip image i horizontally where ``flips[i, 0]`` and vertically where ``flips[i, 1]``."""
    out = images.clone()
    horizontal, vertical = flips[:, 0], flips[:, 1]
    out[horizontal] = out[horizontal].flip(-1)
    out[vertical] = out[vertical].flip(-2)
    return out


def train_batches(
    images: ImageSource,
    labels: torch.Tensor,
    batch_size: int,
    seed: int,
    epoch: int,
    *,
    augment: str = "none",
    rank: int = 0,
    world_size: int = 1,
    policy=None,
    weights: torch.Tensor | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """This rank's shuffled mini-batches of epoch ``epoch``; ``batch_size`` is the global batch
    (``batch_size / world_size`` images per rank). Single process: a final batch of one image is
    merged into the previous one (BatchNorm cannot train on a single image).

    Batches and flips are those of the single-process run, split across ranks: the flips of each
    global batch are drawn as one block and rank r takes its rows r, r + W, …

    ``augment="anatomy"`` applies ``policy`` (an
    :class:`~qhqcnn.data.augment.AugmentPolicy`); ``weights`` (one per image) replaces the
    shuffle by a weighted draw with replacement of as many images (a balanced sampler; one
    process only). Both draw from the epoch's generator, so they are resume-safe.
    """
    if batch_size % world_size:
        raise ValueError(f"batch size {batch_size} is not divisible by {world_size} ranks")
    generator = epoch_generator(seed, epoch)
    if weights is not None:
        if world_size != 1:
            raise ValueError("the balanced sampler runs in one process only")
        order = torch.multinomial(weights, len(labels), replacement=True, generator=generator)
    else:
        order = torch.tensor(epoch_order(len(labels), seed, epoch, rank, world_size))
        torch.randperm(len(labels), generator=generator)  # the sampler's draw: flips after it
    local = batch_size // world_size
    starts = list(range(0, len(order), local))
    if world_size == 1 and len(starts) > 1 and len(order) - starts[-1] == 1:
        starts.pop()
    for i, start in enumerate(starts):
        stop = starts[i + 1] if i + 1 < len(starts) else len(order)
        index = order[start:stop]
        batch = images[index]
        if augment == "flip":
            flips = torch.rand((stop - start) * world_size, 2, generator=generator) < 0.5
            batch = apply_flips(batch, flips[rank::world_size])
        elif augment == "anatomy":
            from qhqcnn.data.augment import apply_anatomy_augment

            batch = apply_anatomy_augment(batch, policy, generator)
        yield batch, labels[index]


def eval_batches(
    images: ImageSource, batch_size: int, *, rows: slice = slice(None)
) -> Iterator[torch.Tensor]:
    """Consecutive batches of ``images[rows]`` (a contiguous row range)."""
    first, last, _ = rows.indices(images.shape[0])
    for start in range(first, last, batch_size):
        yield images[start : min(start + batch_size, last)]
