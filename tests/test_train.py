"""Training, evaluation and the CLI end to end on real BreastMNIST subsets."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from qhqcnn.cli.main import main
from qhqcnn.config import ModelSpec, TrainConfig
from qhqcnn.errors import ConfigError, DataError, RunNotFoundError, TrainingError
from qhqcnn.training.trainer import Trainer

SMALL = ["--max-train", "48", "--max-eval", "40", "--batch-size", "16", "--no-progress"]


def _train(tmp_path, name, *extra, data_dir):
    out = tmp_path / name
    code = main(
        [
            "train",
            "--dataset",
            "breastmnist",
            "--out",
            str(out),
            "--data-dir",
            data_dir,
            *SMALL,
            *extra,
        ]
    )
    return code, out


def test_train_evaluate_end_to_end(tmp_path, breast_dir, capsys, check_run):
    code, out = _train(tmp_path, "hq", "--epochs", "2", data_dir=breast_dir)
    assert code == 0
    for name in (
        "config.json",
        "history.json",
        "best.pt",
        "last.pt",
        "metrics_test.json",
        "predictions_test.npz",
    ):
        assert (out / name).exists(), name
    record = json.loads((out / "config.json").read_text())
    assert record["parameters"]["quantum"] == 38
    assert record["circuit"]["num_weights"] == 38
    assert record["data"]["md5"] == "750601b1f35ba3300ea97c75c52ff8f6"
    assert record["environment"]["packages"]["qiskit"].startswith("2.")
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    metrics = check_run(out, n_images=40)
    printed = capsys.readouterr().out
    assert "quantum parameters" in printed and "AUC" in printed

    # evaluate again from the CLI: same numbers (deterministic model and data)
    assert main(["evaluate", str(out), "--data-dir", breast_dir]) == 0
    again = json.loads((out / "metrics_test.json").read_text())
    assert again["auc"] == pytest.approx(metrics["auc"], abs=1e-12)
    with np.load(out / "predictions_test.npz") as predictions:
        assert predictions["y_score"].shape == (40, 2)


def test_classical_ablation_matches_architecture(tmp_path, breast_dir):
    code, out = _train(tmp_path, "cl", "--model", "classical", "--epochs", "1", data_dir=breast_dir)
    assert code == 0
    record = json.loads((out / "config.json").read_text())
    assert record["parameters"]["quantum"] == 0
    assert record["parameters"]["head"] == 40  # tanh(Linear(4, 8)) vs 38 circuit weights
    hq = ModelSpec().template()
    assert hq.num_weights == 38


def _trainer(tmp_path, breast_dir, epochs=3, **kwargs):
    config = TrainConfig(
        dataset="breastmnist",
        epochs=epochs,
        batch_size=16,
        max_train=48,
        max_eval=40,
        seed=7,
        **kwargs,
    )
    return Trainer(config, tmp_path, data_dir=breast_dir, progress=False)


def _final_weights(trainer):
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


@pytest.mark.parametrize("model", ["hqcnn", "classical"])
def test_resume_after_interrupt_gives_the_same_result(tmp_path, breast_dir, monkeypatch, model):
    spec = ModelSpec(model=model)
    straight = _trainer(tmp_path / "straight", breast_dir, model=spec)
    straight.fit()

    interrupted = _trainer(tmp_path / "interrupted", breast_dir, model=spec)
    original = interrupted._train_epoch

    def stop_in_epoch_2(epoch):
        if epoch == 2:
            raise KeyboardInterrupt
        return original(epoch)

    monkeypatch.setattr(interrupted, "_train_epoch", stop_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit()
    saved = torch.load(tmp_path / "interrupted" / "last.pt", weights_only=False)
    assert saved["epoch"] == 1

    resumed = Trainer.resume(tmp_path / "interrupted", data_dir=breast_dir, progress=False)
    assert resumed.start_epoch == 2
    resumed.fit()
    expected, got = _final_weights(straight), _final_weights(resumed)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0, msg=key)
    assert [h["val_auc"] for h in resumed.history] == [h["val_auc"] for h in straight.history]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, breast_dir, monkeypatch):
    trainer = _trainer(tmp_path, breast_dir, epochs=3, model=ModelSpec(model="classical"))
    calls = {"n": 0}
    real_loss = trainer.loss_fn

    def loss_going_nan(logits, labels):
        calls["n"] += 1
        value = real_loss(logits, labels)
        return value * float("nan") if calls["n"] > 3 else value  # epoch 1 has 3 batches

    monkeypatch.setattr(trainer, "loss_fn", loss_going_nan)
    with pytest.raises(TrainingError, match="non-finite loss"):
        trainer.fit()
    saved = torch.load(tmp_path / "last.pt", weights_only=False)
    assert saved["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())


@pytest.mark.parametrize(
    ("args", "message", "kind"),
    [
        (["train", "--dataset", "nosuchmnist"], "unknown dataset", ConfigError),
        (["train", "--model", "transformer"], "unknown model", ConfigError),
        (["train", "--backend", "warp-drive"], "unknown backend", ConfigError),
        (["train", "--epochs", "0"], "epochs must be", ConfigError),
        (["train", "--relabel", "9"], "class", ConfigError),
        (["evaluate", "/nonexistent/run"], "not a qhqcnn run directory", RunNotFoundError),
        (["train", "--resume", "--out", "/nonexistent/run"], "no run to resume", RunNotFoundError),
    ],
)
def test_cli_errors_are_clear(args, message, kind, breast_dir, capsys):
    assert main([*args, "--data-dir", breast_dir]) == kind.exit_code
    assert message in capsys.readouterr().err.lower()


def test_existing_run_is_not_overwritten(tmp_path, breast_dir, capsys):
    code, out = _train(tmp_path, "cl", "--model", "classical", "--epochs", "1", data_dir=breast_dir)
    before = (out / "config.json").read_bytes()
    again = _train(tmp_path, "cl", "--model", "classical", data_dir=breast_dir)[0]
    assert again == ConfigError.exit_code
    assert "already holds a run" in capsys.readouterr().err
    assert (out / "config.json").read_bytes() == before


def test_missing_data_is_reported_with_where_to_put_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("qhqcnn.data.medmnist.pooch.retrieve", _no_network)
    code = main(["train", "--data-dir", str(tmp_path), "--out", str(tmp_path / "r")])
    assert code == DataError.exit_code
    err = capsys.readouterr().err
    assert "breastmnist.npz" in err and str(tmp_path) in err


def _no_network(*args, **kwargs):
    raise OSError("network is unreachable")


def test_config_rejects_impossible_values():
    with pytest.raises(ConfigError):
        TrainConfig(batch_size=0)
    with pytest.raises(ConfigError):
        TrainConfig.from_dict({"dataset": "breastmnist", "colour": "blue"})


def test_cli_never_imports_torchvision(tmp_path, breast_dir):
    code = (
        "import sys; from qhqcnn.cli.main import main; "
        f"rc = main(['train', '--model', 'classical', '--epochs', '1', '--max-train', '16', "
        f"'--max-eval', '16', '--no-progress', '--out', r'{tmp_path / 'r'}', "
        f"'--data-dir', r'{breast_dir}']); "
        "print('TORCHVISION' if 'torchvision' in sys.modules else 'CLEAN', rc)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "CLEAN 0"
