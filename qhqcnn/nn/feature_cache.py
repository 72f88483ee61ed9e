"""On-disk cache of quanvolved features for fixed (random, untrained) quanvolution filters.

A fixed filter maps each image to the same features in every epoch and every run, so they are
computed once per dataset split and kept as ``.npz`` files::

    <cache dir>/quanv/<dataset>-<split>-<key>.npz     features (V, N, C·n_out, H', W') float32

``<cache dir>`` is ``--cache-dir``, else ``$QHQCNN_CACHE_DIR``, else ``~/.cache/qhqcnn``.
``<key>`` hashes everything the features depend on: the filter circuit (its OpenQASM 3 text)
and observables, window, stride, encoding and pixel range, the backend and its options, the
dataset file's MD5, the split, the relabelling, and a digest of the images themselves (so
``--max-train`` subsets and any change in preprocessing get their own entry). Changing the
filter therefore never reuses stale features; old entries are simply left behind (delete the
folder to reclaim space). V holds the image variants the training augmentation can produce
(none, horizontal, vertical and both flips), so augmented batches are cache hits too.

Loading a file fills the layer's in-memory lookup (:class:`qhqcnn.nn.quanv2d.FeatureMemory`); the
model itself is unchanged, so checkpoints, evaluation and other backends work as without it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from qiskit import qasm3

from qhqcnn.io.files import CACHE_ENV, atomic_save_npz, default_cache_dir
from qhqcnn.nn.quanv2d import Quanv2d

__all__ = ["CACHE_ENV", "default_cache_dir"]
CACHE_VERSION = 1
#: Image variants: name -> transform of a (N, C, H, W) batch (matching ``apply_flips``).
VARIANTS = {
    "none": lambda x: x,
    "h": lambda x: x.flip(-1),
    "v": lambda x: x.flip(-2),
    "hv": lambda x: x.flip(-1).flip(-2),
}


def filter_fingerprint(layer: Quanv2d) -> str:
    """SHA-256 of what a fixed filter's features depend on (circuit, readout, geometry, backend)."""
    template, backend = layer.template, layer.backend
    record = {
        "version": CACHE_VERSION,
        "circuit": qasm3.dumps(template.circuit),
        "observables": [op.to_list() for op in template.observables],
        "window": layer.window,
        "stride": layer.stride,
        "encoding": layer.encoding,
        "pixel_range": layer.pixel_range,
        "backend": backend.name,
        "backend_options": backend.options(),
    }
    text = json.dumps(record, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def images_digest(images: torch.Tensor) -> str:
    array = images.detach().cpu().contiguous().numpy()
    digest = hashlib.sha256(f"{array.dtype}{array.shape}".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


def cache_path(
    layer: Quanv2d,
    images: torch.Tensor,
    *,
    cache_dir: str | os.PathLike,
    dataset: str,
    dataset_md5: str,
    split: str,
    relabel: str | None = None,
    variants: Sequence[str] = ("none",),
) -> Path:
    """The cache file of ``images`` (one split) quanvolved by ``layer``."""
    record = [
        filter_fingerprint(layer),
        dataset,
        dataset_md5,
        split,
        relabel,
        list(variants),
        images_digest(images),
    ]
    key = hashlib.sha256(json.dumps(record).encode()).hexdigest()[:24]
    return Path(cache_dir).expanduser() / "quanv" / f"{dataset}-{split}-{key}.npz"


def compute_features(
    layer: Quanv2d, images: torch.Tensor, variants: Sequence[str], batch_size: int = 128
) -> np.ndarray:
    """``(V, N, C·n_out, H', W')`` features, ``batch_size`` images per batched evaluation."""
    out = []
    with torch.no_grad():
        for name in variants:
            transformed = VARIANTS[name](images)
            chunks = [
                layer.quanvolve(transformed[i : i + batch_size]).float()
                for i in range(0, len(transformed), batch_size)
            ]
            out.append(torch.cat(chunks).numpy())
    return np.stack(out)


def _load(path: Path, expected_shape: tuple[int, ...]) -> np.ndarray | None:
    try:
        with np.load(path, allow_pickle=False) as archive:
            features = archive["features"]
    except Exception:  # noqa: BLE001 - an unreadable entry is recomputed and replaced
        return None
    return features if features.shape == expected_shape else None


def cached_features(
    layer: Quanv2d,
    images: torch.Tensor,
    *,
    cache_dir: str | os.PathLike,
    dataset: str,
    dataset_md5: str,
    split: str,
    relabel: str | None = None,
    variants: Sequence[str] = ("none",),
) -> tuple[np.ndarray, Path, bool]:
    """Features of ``images`` (and their ``variants``) from the cache, computed on a miss.

    Returns ``(features, path, hit)`` and fills ``layer.memory`` with every variant. A corrupt
    or mis-shaped entry counts as a miss and is overwritten.
    """
    if not layer.is_fixed:
        raise ValueError("only fixed (weightless) quanvolution filters can be cached")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise ValueError(f"unknown image variants {unknown}; use {list(VARIANTS)}")
    path = cache_path(
        layer,
        images,
        cache_dir=cache_dir,
        dataset=dataset,
        dataset_md5=dataset_md5,
        split=split,
        relabel=relabel,
        variants=variants,
    )
    batch, channels, height, width = images.shape
    shape = (
        len(variants),
        batch,
        layer.out_channels(channels),
        layer.out_size(height),
        layer.out_size(width),
    )
    features = _load(path, shape) if path.exists() else None
    hit = features is not None
    if features is None:
        features = compute_features(layer, images, variants)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_save_npz(path, features=features)
    for name, rows in zip(variants, features, strict=True):
        layer.memory.store(VARIANTS[name](images), torch.from_numpy(rows))
    return features, path, hit


def precompute_for_trainer(trainer, cache_dir: str | os.PathLike | None = None) -> list[str]:
    """Load or compute the cached features of every split for the trainer's fixed Quanv2d.

    Only a fixed filter applied directly to the model's input images is cached (lookups are by
    image content, so anything else would only miss). Returns one line per split for the user.
    """
    layer = getattr(trainer.model, "head", None)
    if not isinstance(layer, Quanv2d) or not layer.memoizing:
        return []
    cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    config, info = trainer.config, trainer.data.info
    lines = []
    for split, tensors in trainer.data.splits.items():
        if not isinstance(tensors.images, torch.Tensor):  # memory-mapped MedMNIST+ images
            lines.append(f"quanv features ({split}): not cached (memory-mapped images)")
            continue
        variants = tuple(VARIANTS) if split == "train" and config.augment == "flip" else ("none",)
        _, path, hit = cached_features(
            layer,
            tensors.images,
            cache_dir=cache_dir,
            dataset=config.dataset,
            dataset_md5=info.md5,
            split=split,
            relabel=config.relabel,
            variants=variants,
        )
        lines.append(f"quanv features ({split}): {'cache hit' if hit else 'computed'} {path}")
    return lines
