"""Medical-imaging conventions: class balance, anatomy-aware augmentation, the ordinal loss,
multi-label ChestMNIST (synthetic file in the official format) and medmnist result files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from qhqcnn.cli.main import main
from qhqcnn.data import medmnist_info as _medmnist
from qhqcnn.training import medical

TINY = ["--epochs", "1", "--batch-size", "16", "--threads", "1", "--no-progress"]


def test_class_weights_and_balanced_sampler():
    labels = torch.tensor([0, 0, 0, 1])
    assert medical.class_weights(labels, "binary-class", 2).tolist() == pytest.approx(
        [4 / 6, 4 / 2]
    )
    assert medical.sample_weights(labels, "binary-class", 2).tolist() == pytest.approx(
        [1 / 3, 1 / 3, 1 / 3, 1.0]
    )
    multi = torch.tensor([[1, 0], [0, 0], [0, 1], [0, 1]], dtype=torch.float32)
    # pos_weight = negatives / positives per label
    assert medical.class_weights(multi, medical.MULTI_LABEL, 2).tolist() == [3.0, 1.0]
    with pytest.raises(ValueError):
        medical.sample_weights(multi, medical.MULTI_LABEL, 2)
    # the sampler draws the minority class about as often as the majority
    from qhqcnn.data.batches import train_batches

    labels = torch.tensor([0] * 90 + [1] * 10)
    images = torch.zeros(100, 1, 4, 4)
    weights = medical.sample_weights(labels, "binary-class", 2)
    drawn = torch.cat([y for _, y in train_batches(images, labels, 100, 0, 1, weights=weights)])
    assert 30 <= int(drawn.sum()) <= 70


def test_anatomy_policy_only_plausible_flips_and_reproducible():
    assert not medical.augment_policy("chestmnist").hflip
    assert medical.augment_policy("breastmnist").hflip
    assert not medical.augment_policy("breastmnist").vflip
    assert medical.augment_policy("bloodmnist").vflip
    assert "| chestmnist | chest X-ray | no | no |" in medical.policy_table()
    images = torch.randn(8, 1, 28, 28)
    flip_only = medical.AugmentPolicy("test", True, False, 0, 0, "")
    out = medical.apply_anatomy_augment(images, flip_only, torch.Generator().manual_seed(0))
    for a, b in zip(images, out, strict=True):  # never upside down: b is a or a mirrored a
        assert torch.allclose(a, b, atol=1e-5) or torch.allclose(a.flip(-1), b, atol=1e-5)
    policy = medical.augment_policy("breastmnist")
    one = medical.apply_anatomy_augment(images, policy, torch.Generator().manual_seed(3))
    two = medical.apply_anatomy_augment(images, policy, torch.Generator().manual_seed(3))
    assert torch.equal(one, two) and one.shape == images.shape


def test_ordinal_loss_punishes_far_grades_more():
    loss = medical.OrdinalLoss()
    target = torch.tensor([0])
    near = torch.tensor([[0.0, 3.0, 0.0, 0.0, 0.0]])
    far = torch.tensor([[0.0, 0.0, 0.0, 0.0, 3.0]])
    ce = torch.nn.CrossEntropyLoss()
    assert ce(near, target) == pytest.approx(float(ce(far, target)))  # CE cannot tell them apart
    assert loss(far, target) > loss(near, target)


def _chest_file(root: Path, n: int = 40) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for split in ("train", "val", "test"):
        labels = rng.integers(0, 2, size=(n, 14), dtype=np.uint8)
        labels[:2] = [[1] * 14, [0] * 14]  # every label has both values
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        images[:, :4, :4] = (labels[:, :1] * 200)[:, :, None]  # a little signal
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels
    path = root / "chestmnist.npz"
    np.savez_compressed(path, **arrays)
    return path


def test_multilabel_chestmnist_with_class_weights_and_medmnist_result_file(
    tmp_path, monkeypatch, capsys
):
    import medmnist

    path = _chest_file(tmp_path)
    monkeypatch.setitem(
        _medmnist.INFO["chestmnist"], "MD5", hashlib.md5(path.read_bytes()).hexdigest()
    )
    run = tmp_path / "run"
    args = ["train", "--dataset", "chestmnist", "--model", "backbone-head", "--class-balance",
            "weights", "--augment", "anatomy", "--out", str(run), "--data-dir", str(tmp_path),
            *TINY]  # fmt: skip
    assert main(args) == 0
    capsys.readouterr()
    metrics = json.loads((run / "metrics_test.json").read_text())
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["task"] == "multi-label, binary-class"
    assert config["config"]["class_balance"] == "weights"
    saved = np.load(run / "predictions_test.npz")
    assert saved["y_score"].shape == (40, 14)
    # medmnist's own multi-label definitions (mean per-label AUC, ACC at 0.5 over all labels)
    evaluator = medmnist.Evaluator("chestmnist", "test", root=str(tmp_path))
    result_file = Path(metrics["medmnist_file"])
    assert result_file.parent == run and result_file.name.startswith("chestmnist_test_[AUC]")
    assert result_file.name.endswith("@backbone-head-s0.csv")
    import pandas as pd

    scores = pd.read_csv(result_file, index_col=0, header=None).sort_index().values
    ours = evaluator.evaluate(scores)
    assert ours.AUC == pytest.approx(metrics["auc"]) and ours.ACC == pytest.approx(metrics["acc"])
    assert f"[AUC]{metrics['auc']:.3f}_[ACC]{metrics['acc']:.3f}" in result_file.name
    ordinal = [*args[: -len(TINY)], "--loss", "ordinal", "--out", str(tmp_path / "r2"), *TINY]
    assert main(ordinal) != 0
    assert "the ordinal loss is for single-label tasks" in capsys.readouterr().err


def test_ordinal_loss_and_balanced_sampler_train_on_retinamnist(tmp_path, data_dir, capsys):
    if not (data_dir / "retinamnist.npz").exists():
        pytest.skip("retinamnist.npz not available")
    run = tmp_path / "retina"
    args = ["train", "--dataset", "retinamnist", "--model", "backbone-head", "--loss", "ordinal",
            "--class-balance", "sampler", "--augment", "anatomy", "--max-train", "48",
            "--max-eval", "48", "--out", str(run), "--data-dir", str(data_dir), *TINY]  # fmt: skip
    assert main(args) == 0
    capsys.readouterr()
    config = json.loads((run / "config.json").read_text())["config"]
    assert (config["loss"], config["class_balance"], config["augment"]) == (
        "ordinal", "sampler", "anatomy")  # fmt: skip
    assert list(run.glob("retinamnist_test_[[]AUC[]]*@backbone-head-s0.csv"))
