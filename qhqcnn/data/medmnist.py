"""MedMNIST data: dataset table, checksummed download, validated loading and binary relabelling.

Files are the official MedMNIST v2 ``<name>.npz`` archives (28×28) and the MedMNIST+
``<name>_<size>.npz`` ones (64, 128, 224). They are looked up in a data directory
(``--data-dir`` / ``$QHQCNN_DATA_DIR`` / medmnist's ``~/.medmnist``), checked against the MD5 in
medmnist's ``INFO`` table, and downloaded with pooch when missing.

Memory-mapped loading (``mmap=True``, used for the larger sizes): each array of the archive is
extracted once, streamed in chunks, to an ``.npy`` file in the cache directory and opened with
``np.load(mmap_mode="r")``, so a 224×224 set never has to fit in RAM.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import pooch

from qhqcnn.config import IMAGE_SIZES
from qhqcnn.data import medmnist_info as _medmnist
from qhqcnn.errors import ConfigError, DataError

DATA_DIR_ENV = "QHQCNN_DATA_DIR"
SPLITS = ("train", "val", "test")
IMAGE_SIZE = 28
#: Image sizes of MedMNIST v2 (28) and MedMNIST+ (64, 128, 224).
BINARY_TASK = "binary-class"
MULTI_LABEL_TASK = "multi-label, binary-class"

RelabelKind = Literal["one-vs-rest", "pair"]
LossKind = Literal["multi-class", "multi-label"]

# MD5 digests already computed this process, keyed on (resolved path, size, mtime_ns).
_MD5_CACHE: dict[tuple[str, int, int], str] = {}
# Errors numpy/zipfile/zlib raise on a file that is not a readable npz archive.
_ARCHIVE_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Data directory: ``data_dir`` if given, else ``$QHQCNN_DATA_DIR``, else ``~/.medmnist``."""
    if data_dir is not None and str(data_dir):
        return Path(data_dir).expanduser()
    from_env = os.environ.get(DATA_DIR_ENV)
    if from_env:
        return Path(from_env).expanduser()
    if _medmnist.DEFAULT_ROOT is None:
        raise ConfigError(
            f"No data directory: pass --data-dir or set {DATA_DIR_ENV} "
            "(medmnist could not create its default ~/.medmnist)."
        )
    return Path(_medmnist.DEFAULT_ROOT)


def available_datasets() -> list[str]:
    """Names of the 2D MedMNIST datasets (the 3D ones are not supported)."""
    return [
        name for name, entry in _medmnist.INFO.items() if not entry["python_class"].endswith("3D")
    ]


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ConfigError(f"Unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    return split


@dataclass(frozen=True)
class Relabel:
    """Turn a single-label dataset into a binary task.

    ``one-vs-rest``: class ``positive`` -> 1, every other class -> 0.
    ``pair``: class ``negative`` -> 0, class ``positive`` -> 1, all other images dropped.
    """

    kind: RelabelKind
    positive: int
    negative: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("one-vs-rest", "pair"):
            raise ConfigError(f"Unknown relabel kind {self.kind!r}; use 'one-vs-rest' or 'pair'")
        if self.kind == "pair" and self.negative is None:
            raise ConfigError("A 'pair' relabel needs a negative class")
        if self.kind == "one-vs-rest" and self.negative is not None:
            raise ConfigError("A 'one-vs-rest' relabel takes no negative class")
        for value in self.classes:
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
                raise ConfigError(f"Relabel classes must be non-negative integers, got {value!r}")
        if self.kind == "pair" and self.negative == self.positive:
            raise ConfigError(f"A pair relabel needs two different classes, got {self.positive}")

    @property
    def classes(self) -> tuple[int, ...]:
        """Original classes that are singled out (negative first for a pair)."""
        return (self.positive,) if self.negative is None else (self.negative, self.positive)

    @classmethod
    def parse(cls, text: str) -> Relabel:
        """Parse ``"3"``/``"ovr:3"`` (class 3 vs rest) or ``"0,1"``/``"pair:0,1"`` (0->0, 1->1)."""
        raw = str(text).strip()
        prefix, has_prefix, body = raw.partition(":")
        if not has_prefix:
            prefix, body = ("pair" if "," in raw else "ovr"), raw
        kind = prefix.strip().lower()
        usage = (
            f"Invalid relabel {text!r}; use 'ovr:K' or 'K' (class K vs rest) "
            "or 'pair:A,B' or 'A,B' (class A -> 0, class B -> 1)"
        )
        try:
            numbers = [int(part) for part in body.split(",")]
        except ValueError:
            raise ConfigError(usage) from None
        if kind in ("ovr", "one-vs-rest") and len(numbers) == 1:
            return cls("one-vs-rest", positive=numbers[0])
        if kind == "pair" and len(numbers) == 2:
            return cls("pair", positive=numbers[1], negative=numbers[0])
        raise ConfigError(usage)

    def __str__(self) -> str:
        if self.kind == "pair":
            return f"pair:{self.negative},{self.positive}"
        return f"ovr:{self.positive}"

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly form for run configs."""
        negative = None if self.negative is None else int(self.negative)
        return {"kind": self.kind, "positive": int(self.positive), "negative": negative}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Relabel:
        """Inverse of :meth:`to_dict`."""
        unknown = set(data) - {"kind", "positive", "negative"}
        if unknown or "kind" not in data or "positive" not in data:
            raise ConfigError(
                f"Invalid relabel config {dict(data)!r}; need kind, positive[, negative]"
            )
        return cls(data["kind"], data["positive"], data.get("negative"))  # type: ignore[arg-type]

    def check(self, info: DatasetInfo) -> None:
        """Raise ConfigError unless this relabel fits the (single-label) dataset ``info``."""
        if info.task == MULTI_LABEL_TASK:
            raise ConfigError(f"Cannot relabel {info.name}: it is a multi-label dataset")
        for value in self.classes:
            if value >= info.n_classes:
                names = ", ".join(f"{k}={v}" for k, v in info.label_names.items())
                raise ConfigError(
                    f"Relabel class {value} is out of range for {info.name}, "
                    f"which has classes 0..{info.n_classes - 1} ({names})"
                )

    def apply(self, images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(images, binary int64 labels)``; a pair drops images of other classes."""
        labels = np.asarray(labels)
        if labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
        if labels.ndim != 1:
            raise ConfigError(
                f"Relabelling needs single-label labels of shape (N,), got {labels.shape} "
                "(multi-label datasets cannot be relabelled)"
            )
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if self.kind == "pair":
            keep = np.isin(labels, self.classes)
            images, labels = images[keep], labels[keep]
        return images, (labels == self.positive).astype(np.int64)


@dataclass(frozen=True)
class DatasetInfo:
    """What the model and trainer need to know about a dataset (after any relabelling)."""

    name: str
    task: str
    label_names: dict[int, str]
    n_classes: int
    n_channels: int
    n_samples: dict[str, int]
    url: str
    md5: str
    relabel: Relabel | None = None
    size: int = IMAGE_SIZE

    @property
    def is_multi_label(self) -> bool:
        return self.task == MULTI_LABEL_TASK

    @property
    def loss_kind(self) -> LossKind:
        """``"multi-label"`` (BCE, one output per label) or ``"multi-class"`` (CE)."""
        return "multi-label" if self.is_multi_label else "multi-class"

    @property
    def file_name(self) -> str:
        return f"{self.name}.npz" if self.size == IMAGE_SIZE else f"{self.name}_{self.size}.npz"

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """Per-image shape as loaded: (H, W, C)."""
        return (self.size, self.size, self.n_channels)

    def relabelled(self, relabel: Relabel | None) -> DatasetInfo:
        """Info of the binary task made by ``relabel`` (``self`` when it is None).

        For a ``pair`` the split sizes are unknown until loaded, so ``n_samples`` is empty.
        """
        if relabel is None:
            return self
        if self.relabel is not None:
            raise ConfigError(f"{self.name} is already relabelled ({self.relabel})")
        relabel.check(self)
        negative_name = "rest" if relabel.negative is None else self.label_names[relabel.negative]
        return replace(
            self,
            task=BINARY_TASK,
            label_names={0: negative_name, 1: self.label_names[relabel.positive]},
            n_classes=2,
            n_samples=dict(self.n_samples) if relabel.kind == "one-vs-rest" else {},
            relabel=relabel,
        )


@dataclass(frozen=True)
class SplitData:
    """One split: uint8 images (N, H, W, C) and int64 labels ((N,) or (N, L) if multi-label)."""

    images: np.ndarray
    labels: np.ndarray
    info: DatasetInfo

    def __len__(self) -> int:
        return len(self.labels)


def dataset_info(name: str, size: int = IMAGE_SIZE) -> DatasetInfo:
    """Info for a 2D MedMNIST dataset (name is case-insensitive) at image ``size``."""
    key = str(name).strip().lower()
    valid = available_datasets()
    if key not in valid:
        note = " (3D datasets are not supported)" if key in _medmnist.INFO else ""
        raise ConfigError(f"Unknown dataset {name!r}{note}; valid names: {', '.join(valid)}")
    if size not in IMAGE_SIZES:
        raise ConfigError(
            f"image size {size} is not a MedMNIST size; choose one of "
            + ", ".join(map(str, IMAGE_SIZES))
        )
    entry = _medmnist.INFO[key]
    suffix = "" if size == IMAGE_SIZE else f"_{size}"
    if f"url{suffix}" not in entry:
        raise ConfigError(f"{key} has no {size}×{size} files in this medmnist version")
    label_names = {int(k): str(v) for k, v in entry["label"].items()}
    return DatasetInfo(
        name=key,
        task=entry["task"],
        label_names=dict(sorted(label_names.items())),
        n_classes=len(label_names),
        n_channels=int(entry["n_channels"]),
        n_samples={split: int(n) for split, n in entry["n_samples"].items()},
        url=entry[f"url{suffix}"],
        md5=entry[f"MD5{suffix}"].lower(),
        size=size,
    )


def _cache_key(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return (str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def file_md5(path: str | os.PathLike[str]) -> str:
    """MD5 hex digest of a file, cached per (path, size, mtime) for this process."""
    key = _cache_key(Path(path))
    if key not in _MD5_CACHE:
        _MD5_CACHE[key] = pooch.file_hash(str(path), alg="md5")
    return _MD5_CACHE[key]


def check_md5(path: str | os.PathLike[str], info: DatasetInfo) -> None:
    """Raise DataError if the file's MD5 is not the official one; the file is left untouched."""
    actual = file_md5(path)
    if actual != info.md5:
        raise DataError(
            f"MD5 mismatch for {path}: expected {info.md5}, got {actual}. The file is corrupt, "
            "truncated or not the official MedMNIST release; it was not modified. Replace it "
            f"with a fresh copy of {info.url}, or delete it to let qhqcnn download it again."
        )


def _how_to_get(info: DatasetInfo, path: Path) -> str:
    return (
        f"Download {info.url} (MD5 {info.md5}) and save it as {path}, or point {DATA_DIR_ENV} "
        f"or --data-dir at a directory that already contains {info.file_name}."
    )


def ensure_dataset_file(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    verify_md5: bool = True,
    size: int = IMAGE_SIZE,
) -> Path:
    """``<data_dir>/<name>[_<size>].npz``, MD5-verified, downloaded if missing and allowed."""
    info = dataset_info(name, size)
    path = resolve_data_dir(data_dir) / info.file_name
    if path.is_file():
        if verify_md5:
            check_md5(path, info)
        return path
    if path.exists():
        raise DataError(f"{path} exists but is not a regular file. {_how_to_get(info, path)}")
    if not download:
        raise DataError(
            f"{info.file_name} not found in {path.parent} and downloading is disabled. "
            + _how_to_get(info, path)
        )
    try:
        fetched = pooch.retrieve(
            info.url,
            known_hash=f"md5:{info.md5}",
            fname=info.file_name,
            path=path.parent,
            progressbar=True,
        )
    except (OSError, ValueError) as exc:  # requests errors are OSErrors; bad hash is ValueError
        raise DataError(
            f"Could not download {info.file_name} from {info.url}: {str(exc).rstrip('.')}. "
            + _how_to_get(info, path)
        ) from exc
    fetched_path = Path(fetched)
    _MD5_CACHE[_cache_key(fetched_path)] = info.md5  # pooch has just verified it
    return fetched_path


def _validated_split(
    path: Path, info: DatasetInfo, split: str, images: np.ndarray, labels: np.ndarray
) -> SplitData:
    where = f"{path} ({split} split of {info.name})"
    if images.dtype != np.uint8:
        raise DataError(f"{where}: images must be uint8, got {images.dtype}")
    if images.ndim == 3:
        images = images[..., np.newaxis]
    if images.ndim != 4 or images.shape[1:] != info.image_shape:
        raise DataError(
            f"{where}: images have shape {images.shape}, expected "
            f"(N, {info.size}, {info.size}" + (", 3)" if info.n_channels == 3 else ")")
        )
    n_images = images.shape[0]
    if labels.ndim == 0 or labels.shape[0] != n_images:
        raise DataError(f"{where}: {n_images} images but labels have shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{where}: labels must be integers, got {labels.dtype}")
    width = info.n_classes if info.is_multi_label else 1
    if labels.ndim == 1 and width == 1:
        labels = labels[:, np.newaxis]
    if labels.shape != (n_images, width):
        raise DataError(
            f"{where}: labels have shape {labels.shape}, expected ({n_images}, {width})"
        )
    high = 1 if info.is_multi_label else info.n_classes - 1
    if n_images and (labels.min() < 0 or labels.max() > high):
        raise DataError(
            f"{where}: label values span {labels.min()}..{labels.max()}, expected 0..{high}"
        )
    labels = labels.astype(np.int64)
    return SplitData(images=images, labels=labels if width > 1 else labels[:, 0], info=info)


def _extracted_member(archive: zipfile.ZipFile, key: str, target: Path) -> Path:
    """Stream ``key.npy`` of an npz archive to ``target`` in chunks (never whole in RAM)."""
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with archive.open(f"{key}.npy") as member:
        version = np.lib.format.read_magic(member)
        read_header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, fortran, dtype = read_header(member)
        if fortran or dtype.hasobject:
            raise ValueError(f"{key}: only C-ordered plain arrays can be memory-mapped")
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
            flat = out.reshape(-1).view(np.uint8)
            chunk, done = 1 << 24, 0
            while done < flat.size:
                data = member.read(min(chunk, flat.size - done))
                if not data:
                    raise EOFError(f"{key}.npy is truncated")
                flat[done : done + len(data)] = np.frombuffer(data, dtype=np.uint8)
                done += len(data)
            out.flush()
            del out, flat
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)  # a failed extraction leaves nothing behind
    return target


def _memory_mapped(
    archive: np.lib.npyio.NpzFile, path: Path, keys: list[str], md5: str
) -> dict[str, np.ndarray]:
    """The arrays ``keys`` of the open npz ``archive`` (file ``path``), memory-mapped from
    ``.npy`` copies in the cache."""
    from qhqcnn.io.files import default_cache_dir

    folder = default_cache_dir() / "npy" / f"{path.stem}-{md5[:12]}"
    return {
        key: np.load(_extracted_member(archive.zip, key, folder / f"{key}.npy"), mmap_mode="r")
        for key in keys
    }


def load_npz_file(
    path: str | os.PathLike[str],
    info: DatasetInfo,
    splits: Iterable[str] = SPLITS,
    *,
    mmap: bool = False,
) -> dict[str, SplitData]:
    """Read and validate the given splits of a MedMNIST-format npz file (no MD5 check).

    With ``mmap`` the image arrays are memory-mapped (see the module docstring), not loaded.
    """
    path = Path(path)
    splits = [_check_split(split) for split in splits]
    broken = f"{path} is not a readable .npz archive (corrupt or truncated?)"
    try:
        archive = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{path} does not exist") from None
    except _ARCHIVE_ERRORS as exc:
        raise DataError(f"{broken}: {exc}") from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"{path} holds a single array, not a MedMNIST .npz archive")
    with archive:
        keys = [f"{split}_{part}" for split in splits for part in ("images", "labels")]
        missing = [key for key in keys if key not in archive.files]
        if missing:
            raise DataError(
                f"{path} lacks {', '.join(missing)} (it has: {', '.join(archive.files) or 'none'})"
            )
        try:
            image_keys = [k for k in keys if k.endswith("_images")] if mmap else []
            arrays = {key: archive[key] for key in keys if key not in image_keys}
            if image_keys:
                arrays.update(_memory_mapped(archive, path, image_keys, info.md5))
        except _ARCHIVE_ERRORS as exc:
            raise DataError(f"{broken}: {exc}") from exc
    return {
        split: _validated_split(
            path, info, split, arrays[f"{split}_images"], arrays[f"{split}_labels"]
        )
        for split in splits
    }


def load_split(
    name: str,
    split: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    relabel: Relabel | str | None = None,
    download: bool = True,
    verify_md5: bool = True,
    size: int = IMAGE_SIZE,
    mmap: bool = False,
) -> SplitData:
    """Load one split of a dataset at image ``size``, optionally relabelled to a binary task
    (``mmap``: memory-map the images instead of reading them into RAM)."""
    split = _check_split(split)
    if isinstance(relabel, str):
        relabel = Relabel.parse(relabel)
    info = dataset_info(name, size)
    target_info = info.relabelled(relabel)  # validate the relabel before any I/O
    path = ensure_dataset_file(
        info.name, data_dir, download=download, verify_md5=verify_md5, size=size
    )
    data = load_npz_file(path, info, splits=(split,), mmap=mmap)[split]
    if relabel is None:
        return data
    images, labels = relabel.apply(data.images, data.labels)
    if relabel.kind == "pair":
        target_info = replace(target_info, n_samples={split: len(labels)})
    return SplitData(images=images, labels=labels, info=target_info)
