"""A user's own images and labels as a dataset the package trains on, beside MedMNIST.

:class:`ArrayDataset` holds train/validation/test splits given as numpy arrays (MedMNIST's
layout: images ``(N, H, W)`` or ``(N, H, W, C)``, uint8 in 0–255 or floats in [0, 1]) or as
torch ``Dataset`` objects yielding ``(image (C, H, W), label)``. It is normalised exactly like
MedMNIST (to [−1, 1]) and trains, evaluates and saves run directories the same way::

    data = ArrayDataset.from_arrays(
        train=(x_train, y_train), val=(x_val, y_val), test=(x_test, y_test), task="multi-class"
    )
    result = qhqcnn.train(TrainConfig(model=ModelSpec("hqcnn"), epochs=5), "runs/mine", data=data)
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from qhqcnn.data.medmnist import MULTI_LABEL_TASK, SPLITS, DatasetInfo
from qhqcnn.errors import DataError

#: The task types of MedMNIST (``INFO[name]["task"]``), which decide the loss and the metrics.
TASKS = ("binary-class", "multi-class", "ordinal-regression", MULTI_LABEL_TASK)


def _as_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _to_uint8_layout(images: np.ndarray, split: str) -> np.ndarray:
    """``(N, H, W[, C])`` uint8 or float → uint8-scaled float32 ``(N, H, W, C)`` in 0–255."""
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise DataError(f"{split} images must be (N, H, W) or (N, H, W, C), got {images.shape}")
    if images.shape[1] != images.shape[2]:
        raise DataError(f"{split} images must be square, got {images.shape[1]}×{images.shape[2]}")
    if images.dtype == np.uint8:
        return images
    values = images.astype(np.float32)
    if not np.isfinite(values).all():
        raise DataError(f"{split} images contain NaN or infinite values")
    if values.size and (values.min() < 0.0 or values.max() > 1.0):
        raise DataError(f"{split} float images must lie in [0, 1] (uint8 images in 0-255)")
    return values * np.float32(255.0)


@dataclass(frozen=True)
class ArrayDataset:
    """Train/val/test image arrays with labels and a task type (see the module docstring).

    Attributes:
        splits: ``{"train" | "val" | "test": (images (N, H, W, C), labels)}``; images are uint8
            or float32 on MedMNIST's 0–255 scale.
        task: one of :data:`TASKS`.
        name: a name recorded in the run's config.
        label_names: ``{class index: name}``.
    """

    splits: Mapping[str, tuple[np.ndarray, np.ndarray]]
    task: str
    name: str = "custom"
    label_names: Mapping[int, str] | None = None

    @classmethod
    def from_arrays(
        cls,
        *,
        train: tuple[Any, Any],
        val: tuple[Any, Any],
        test: tuple[Any, Any] | None = None,
        task: str = "multi-class",
        name: str = "custom",
        label_names: Mapping[int, str] | None = None,
    ) -> ArrayDataset:
        """Build from ``(images, labels)`` pairs (numpy arrays or tensors, channel-last).

        ``test`` may be omitted: the run then has no test metrics until evaluated elsewhere.
        """
        if task not in TASKS:
            raise DataError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
        splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for split, pair in (("train", train), ("val", val), ("test", test)):
            if pair is None:
                continue
            images, labels = (_as_numpy(v) for v in pair)
            images = _to_uint8_layout(images, split)
            labels = labels.astype(np.int64)
            if task != MULTI_LABEL_TASK:
                labels = labels.reshape(-1, 1)
            if len(images) != len(labels):
                raise DataError(f"{split}: {len(images)} images but {len(labels)} labels")
            if len(images) < 2:
                raise DataError(f"{split} needs at least 2 images, got {len(images)}")
            if labels.min() < 0:
                raise DataError(f"{split} labels must be >= 0")
            splits[split] = (images, labels)
        shapes = {images.shape[1:] for images, _ in splits.values()}
        if len(shapes) > 1:
            raise DataError(f"the splits' images differ in shape: {sorted(shapes)}")
        dataset = cls(splits=splits, task=task, name=name, label_names=label_names)
        dataset.info  # noqa: B018 - validates the label range against the class count
        return dataset

    @classmethod
    def from_torch(
        cls,
        *,
        train: Any,
        val: Any,
        test: Any | None = None,
        task: str = "multi-class",
        name: str = "custom",
        label_names: Mapping[int, str] | None = None,
    ) -> ArrayDataset:
        """Build from torch ``Dataset`` objects whose items are ``(image (C, H, W), label)``
        with images as floats in [0, 1] (``ToTensor``'s convention)."""

        def arrays(dataset: Any) -> tuple[np.ndarray, np.ndarray]:
            items = [dataset[i] for i in range(len(dataset))]
            images = np.stack([_as_numpy(image) for image, _ in items])
            if images.ndim == 4:
                images = images.transpose(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)
            labels = np.stack([_as_numpy(label).reshape(-1) for _, label in items])
            return images, labels

        return cls.from_arrays(
            train=arrays(train),
            val=arrays(val),
            test=None if test is None else arrays(test),
            task=task,
            name=name,
            label_names=label_names,
        )

    @property
    def info(self) -> DatasetInfo:
        """The :class:`~qhqcnn.data.DatasetInfo` the trainer and models read."""
        images, _ = self.splits["train"]
        if self.task == MULTI_LABEL_TASK:
            n_classes = int(self.splits["train"][1].shape[1])
        else:
            highest = max(int(labels.max()) for _, labels in self.splits.values())
            n_classes = len(self.label_names) if self.label_names else highest + 1
            if highest >= n_classes:
                raise DataError(f"label {highest} is outside the {n_classes} label names")
            n_classes = max(n_classes, 2)
        names = dict(self.label_names or {i: str(i) for i in range(n_classes)})
        return DatasetInfo(
            name=self.name,
            task=self.task,
            label_names={int(k): str(v) for k, v in names.items()},
            n_classes=n_classes,
            n_channels=int(images.shape[3]),
            n_samples={split: int(len(labels)) for split, (_, labels) in self.splits.items()},
            url="",
            md5=self.fingerprint(),
            size=int(images.shape[1]),
        )

    def fingerprint(self) -> str:
        """MD5 of every split's images and labels (recorded with a run, checked on resume)."""
        digest = hashlib.md5()
        for split in SPLITS:
            if split in self.splits:
                for array in self.splits[split]:
                    digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()
