"""MedMNIST+ image sizes: file names and checksums, memory-mapped loading, the size-adaptive
backbone, and a training run on a synthetic 64×64 file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from qhqcnn.cli.main import main
from qhqcnn.config import ModelSpec, TrainConfig
from qhqcnn.data import medmnist_info as _medmnist
from qhqcnn.data.batches import MappedImages, images_to_tensor
from qhqcnn.data.medmnist import dataset_info, load_npz_file, load_split
from qhqcnn.errors import ConfigError
from qhqcnn.models import build_model, parameter_counts


def test_info_names_file_and_checksum_of_each_size():
    for size in (64, 128, 224):
        info = dataset_info("bloodmnist", size)
        assert info.file_name == f"bloodmnist_{size}.npz"
        assert info.md5 == _medmnist.INFO["bloodmnist"][f"MD5_{size}"].lower()
        assert info.url == _medmnist.INFO["bloodmnist"][f"url_{size}"]
        assert info.image_shape == (size, size, 3)
    assert dataset_info("bloodmnist").file_name == "bloodmnist.npz"
    with pytest.raises(ConfigError, match="not a MedMNIST size"):
        dataset_info("bloodmnist", 32)
    with pytest.raises(ConfigError, match="size"):
        TrainConfig(size=100)


def synthetic_file(path, size: int, n: int = 40, seed: int = 0):
    rng = np.random.default_rng(seed)
    arrays = {}
    for split in ("train", "val", "test"):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).astype(np.uint8).reshape(n, 1)
    np.savez_compressed(path, **arrays)
    return arrays


def test_memory_mapped_loading_equals_reading(tmp_path, monkeypatch):
    monkeypatch.setenv("QHQCNN_CACHE_DIR", str(tmp_path / "cache"))
    arrays = synthetic_file(tmp_path / "breastmnist_64.npz", 64)
    info = dataset_info("breastmnist", 64)
    mapped = load_npz_file(tmp_path / "breastmnist_64.npz", info, mmap=True)
    read = load_npz_file(tmp_path / "breastmnist_64.npz", info)
    for split in ("train", "val", "test"):
        assert isinstance(mapped[split].images, np.memmap)
        np.testing.assert_array_equal(mapped[split].images, read[split].images)
        np.testing.assert_array_equal(mapped[split].images[..., 0], arrays[f"{split}_images"])
        np.testing.assert_array_equal(mapped[split].labels, read[split].labels)
    extracted = sorted((tmp_path / "cache" / "npy").rglob("*.npy"))
    assert [p.name for p in extracted] == ["test_images.npy", "train_images.npy", "val_images.npy"]
    stamps = [p.stat().st_mtime_ns for p in extracted]
    load_npz_file(tmp_path / "breastmnist_64.npz", info, mmap=True)  # reuses the extraction
    assert [p.stat().st_mtime_ns for p in extracted] == stamps


def test_mapped_images_convert_only_what_is_indexed():
    raw = np.random.default_rng(1).integers(0, 256, (10, 8, 8, 3), dtype=np.uint8)
    mapped, eager = MappedImages(raw), images_to_tensor(raw)
    assert mapped.shape == eager.shape and len(mapped) == 10
    index = torch.tensor([7, 2, 2, 9])
    torch.testing.assert_close(mapped[index], eager[index], rtol=0, atol=0)
    torch.testing.assert_close(mapped[3:6], eager[3:6], rtol=0, atol=0)


@pytest.mark.parametrize("size", [64, 128, 224])
def test_backbone_keeps_the_bridge_at_every_size(size):
    small = build_model(ModelSpec(model="classical"), 3, 8, image_size=28)
    large = build_model(ModelSpec(model="classical"), 3, 8, image_size=size)
    assert parameter_counts(large) == parameter_counts(small)
    assert any(isinstance(m, nn.AdaptiveAvgPool2d) for m in large.modules())
    assert not any(isinstance(m, nn.AdaptiveAvgPool2d) for m in small.modules())
    large.eval()
    assert large(torch.zeros(2, 3, size, size)).shape == (2, 8)


def test_train_at_size_64_from_a_memory_mapped_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("QHQCNN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr("qhqcnn.data.medmnist.check_md5", lambda path, info: None)  # synthetic file
    synthetic_file(tmp_path / "breastmnist_64.npz", 64)
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--dataset",
            "breastmnist",
            "--size",
            "64",
            "--model",
            "hqcnn",
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--device",
            "cpu",
            "--no-progress",
            "--data-dir",
            str(tmp_path),
            "--out",
            str(out),
        ]
    )
    assert code == 0, capsys.readouterr().err
    record = json.loads((out / "config.json").read_text())
    assert record["config"]["size"] == 64
    assert record["data"]["file"] == "breastmnist_64.npz"
    assert json.loads((out / "metrics_test.json").read_text())["n_images"] == 40
    split = load_split("breastmnist", "test", tmp_path, size=64, mmap=True)
    assert isinstance(split.images, np.memmap)


def test_missing_size_file_names_the_file(tmp_path):
    with pytest.raises(Exception, match="bloodmnist_128.npz"):
        load_split("bloodmnist", "train", tmp_path, size=128, download=False)
