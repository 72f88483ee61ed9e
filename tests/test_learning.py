"""The package learns: a hybrid model trained through the public API on a separable image set."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

import qhqcnn
from qhqcnn.data.batches import images_to_tensor


def _bright_or_dark(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(0, 2, n)
    images = rng.uniform(0.0, 0.4, (n, 28, 28)) + 0.5 * labels[:, None, None]
    return images.astype(np.float32), labels


@pytest.fixture(scope="module")
def separable() -> qhqcnn.ArrayDataset:
    rng = np.random.default_rng(0)
    return qhqcnn.ArrayDataset.from_arrays(
        train=_bright_or_dark(rng, 128),
        val=_bright_or_dark(rng, 64),
        test=_bright_or_dark(rng, 64),
        task="binary-class",
        name="bright-or-dark",
    )


@pytest.mark.slow
def test_hqcnn_learns_a_separable_set(separable, tmp_path):
    config = qhqcnn.TrainConfig(
        model=qhqcnn.ModelSpec("hqcnn"), epochs=2, batch_size=16, augment="none", lr=1e-2
    )
    result = qhqcnn.train(config, tmp_path / "run", data=separable, log=None)
    assert result.test is not None
    assert result.test["acc"] >= 0.95 and result.test["auc"] >= 0.95
    # history.csv holds the same rows as history.json
    history = json.loads(result.run_dir.history_path.read_text())
    with result.run_dir.history_csv_path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in rows] == [h["epoch"] for h in history] == [1, 2]
    assert float(rows[-1]["val_auc"]) == pytest.approx(history[-1]["val_auc"])
    # the run record names the user's data and its checksum
    record = result.run_dir.record()
    assert record["data"]["dataset"] == "bright-or-dark"
    assert record["data"]["md5"] == separable.fingerprint()


def test_one_step_moves_the_circuit_weights(separable):
    info = separable.info
    model = qhqcnn.build_model(
        qhqcnn.ModelSpec("hqcnn"), info.n_channels, info.n_classes, qhqcnn.make_backend("exact")
    )
    layer = model.quantum_layer
    assert layer is not None
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    before = layer.weight.detach().clone()
    images, labels = separable.splits["train"]
    loss = torch.nn.functional.cross_entropy(
        model(images_to_tensor(images[:8])), torch.as_tensor(labels[:8, 0])
    )
    loss.backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
    optimizer.step()
    assert not torch.equal(before, layer.weight.detach())


def test_user_arrays_are_never_modified(separable):
    images, _ = separable.splits["train"]
    copy = images.copy()
    images_to_tensor(images)
    images_to_tensor(images)
    np.testing.assert_array_equal(images, copy)


def test_set_backend_keeps_the_trained_parameter():
    template = qhqcnn.hqcnn_template(3, 1)
    layer = qhqcnn.QuantumLayer(template, "exact", seed=3)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    weight = layer.weight
    x = torch.rand(4, template.num_inputs)
    exact = layer(x).detach()
    layer.set_backend("statevector")
    assert layer.weight is weight
    torch.testing.assert_close(layer(x).detach(), exact, atol=1e-6, rtol=0)
    before = weight.detach().clone()
    layer(x).sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
    optimizer.step()  # the optimiser built before the switch trains the live weights
    assert not torch.equal(layer.weight.detach(), before)


def test_array_dataset_rejects_bad_input():
    rng = np.random.default_rng(1)
    good = _bright_or_dark(rng, 8)
    with pytest.raises(qhqcnn.DataError, match="labels"):
        qhqcnn.ArrayDataset.from_arrays(train=(good[0], good[1][:5]), val=good)
    with pytest.raises(qhqcnn.DataError, match=r"\[0, 1\]"):
        qhqcnn.ArrayDataset.from_arrays(train=(good[0] * 9, good[1]), val=good)
    with pytest.raises(qhqcnn.DataError, match="task"):
        qhqcnn.ArrayDataset.from_arrays(train=good, val=good, task="regression")
    with pytest.raises(qhqcnn.DataError, match="square"):
        qhqcnn.ArrayDataset.from_arrays(train=(good[0][:, :, :20], good[1]), val=good)


def test_array_dataset_from_torch_matches_arrays():
    rng = np.random.default_rng(2)
    images, labels = _bright_or_dark(rng, 6)
    pairs = [
        (torch.from_numpy(img[None]), int(lab)) for img, lab in zip(images, labels, strict=True)
    ]
    from_torch = qhqcnn.ArrayDataset.from_torch(train=pairs, val=pairs, task="binary-class")
    from_arrays = qhqcnn.ArrayDataset.from_arrays(
        train=(images, labels), val=(images, labels), task="binary-class"
    )
    assert from_torch.fingerprint() == from_arrays.fingerprint()


def test_tensorboard_scalars_when_installed(separable, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = qhqcnn.TrainConfig(model=qhqcnn.ModelSpec("classical"), epochs=2, augment="none")
    result = qhqcnn.train(config, tmp_path / "run", data=separable, log=None, evaluate=False)
    events = EventAccumulator(str(result.run_dir.tensorboard_dir))
    events.Reload()
    history = json.loads(result.run_dir.history_path.read_text())
    assert [e.value for e in events.Scalars("val/auc")] == pytest.approx(
        [h["val_auc"] for h in history]
    )
