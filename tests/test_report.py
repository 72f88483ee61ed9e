"""Run reports: figures and report.md for synthetic runs (binary, multi-class, multi-label) and
for one real tiny training run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from qhqcnn.cli.main import main
from qhqcnn.config import ModelSpec, TrainConfig
from qhqcnn.errors import RunNotFoundError
from qhqcnn.reporting.report import load_run, write_report
from qhqcnn.training.rundir import RunDir

REPO = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def fake_run(
    run_dir: Path,
    *,
    task: str,
    n_classes: int,
    model: str = "hqcnn",
    epochs: int = 5,
    n_test: int = 60,
    seed: int = 0,
    with_train_metrics: bool = True,
) -> Path:
    """A run directory as `qhqcnn train` + `evaluate` leave it, with made-up numbers."""
    rng = np.random.default_rng(seed)
    names = {str(k): f"class {k} with a rather long descriptive name" for k in range(n_classes)}
    config = TrainConfig(dataset="fakemnist", model=ModelSpec(model=model), epochs=epochs + 2)
    spec = config.model
    record = {
        "config": config.to_dict(),
        "data": {
            "dataset": "fakemnist",
            "task": task,
            "n_classes": n_classes,
            "n_channels": 1,
            "label_names": names,
            "file": "fakemnist.npz",
            "md5": "0" * 32,
            "n_images": {"train": 200, "val": 50, "test": n_test},
        },
        "parameters": {"classical": 1000, "quantum": 38, "head": 38, "total": 1038},
        "environment": {"packages": {"qiskit": "x"}, "git_commit": None, "machine": {}},
    }
    if spec.is_quantum:
        record["circuit"] = {
            **spec.template().summary(),
            "backend": {"name": "exact", "depth": 31, "transpiled": False},
        }
    history = []
    for epoch in range(1, epochs + 1):
        entry = {"epoch": epoch, "lr": 1e-3, "train_loss": 1.0 / epoch, "val_loss": 1.1 / epoch}
        if with_train_metrics:
            entry |= {"train_acc": 0.5 + 0.08 * epoch, "train_auc": 0.55 + 0.08 * epoch}
        entry |= {"val_acc": 0.5 + 0.05 * epoch, "val_auc": 0.6 + 0.05 * epoch, "seconds": 1.5}
        history.append(entry)
    if task == "multi-label, binary-class":
        y_true = rng.integers(0, 2, size=(n_test, n_classes))
        y_score = 0.3 * y_true + 0.7 * rng.random((n_test, n_classes))
    else:
        y_true = rng.integers(0, n_classes, size=n_test)
        logits = rng.normal(size=(n_test, n_classes)) + 1.5 * np.eye(n_classes)[y_true]
        y_score = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps(record))
    (run_dir / "history.json").write_text(json.dumps(history))
    metrics = {
        "split": "test",
        "backend": "exact",
        "backend_options": {},
        "checkpoint_epoch": 3,
        "n_images": n_test,
        "acc": 0.7312,
        "auc": 0.8421,
    }
    (run_dir / "metrics_test.json").write_text(json.dumps(metrics))
    noisy = metrics | {"backend": "aer", "backend_options": {"noise": "fake_torino"}, "acc": 0.61}
    (run_dir / "metrics_test_aer-fake_torino.json").write_text(json.dumps(noisy))
    np.savez(run_dir / "predictions_test.npz", y_true=y_true, y_score=y_score)
    return run_dir


def check_report(run_dir: Path, figures: list[str]) -> str:
    report = (run_dir / RunDir.REPORT).read_text(encoding="utf-8")
    for figure in figures:
        path = run_dir / "figures" / figure
        assert path.read_bytes()[:8] == PNG_MAGIC, figure
        assert path.stat().st_size > 10_000, figure
        assert f"(figures/{figure})" in report, figure
    return report


@pytest.mark.parametrize(
    ("task", "n_classes"),
    [("binary-class", 2), ("multi-class", 8), ("ordinal-regression", 5)],
)
def test_report_single_label(tmp_path: Path, task: str, n_classes: int) -> None:
    run_dir = fake_run(tmp_path / "run", task=task, n_classes=n_classes)
    write_report(run_dir)
    report = check_report(
        run_dir, ["training_curves.png", "roc_test.png", "confusion_test.png", "circuit.png"]
    )
    assert "| test | exact | — | 3 | 60 | 0.7312 | 0.8421 |" in report
    assert "| test | aer | noise=fake_torino | 3 | 60 | 0.6100 | 0.8421 |" in report
    assert "| quantum (circuit weights) | 38 |" in report
    assert "| weights (trainable) | 38 |" in report
    assert "best validation AUC 0.8500" in report and "at epoch 5" in report


def test_report_multi_label_and_classical(tmp_path: Path) -> None:
    run_dir = fake_run(
        tmp_path / "run",
        task="multi-label, binary-class",
        n_classes=14,
        model="classical",
        with_train_metrics=False,  # histories of older runs have validation metrics only
    )
    write_report(run_dir)
    report = check_report(run_dir, ["training_curves.png", "roc_test.png", "confusion_test.png"])
    assert not (run_dir / "figures" / "circuit.png").exists()
    assert "Classical ablation" in report and "tanh(Linear(4, 8))" in report


def test_report_without_predictions(tmp_path: Path) -> None:
    run_dir = fake_run(tmp_path / "run", task="binary-class", n_classes=2)
    (run_dir / "predictions_test.npz").unlink()
    write_report(run_dir)
    report = check_report(run_dir, ["training_curves.png"])
    assert "No `predictions_test.npz`" in report


def test_report_errors(tmp_path: Path) -> None:
    with pytest.raises(RunNotFoundError, match="not a qhqcnn run directory"):
        load_run(tmp_path)
    assert main(["report", str(tmp_path / "missing")]) == RunNotFoundError.exit_code


def test_report_figures_are_reproducible(tmp_path: Path) -> None:
    run_dir = fake_run(tmp_path / "run", task="multi-class", n_classes=4)
    write_report(run_dir)
    first = {p.name: p.read_bytes() for p in (run_dir / "figures").iterdir()}
    write_report(run_dir)
    assert first == {p.name: p.read_bytes() for p in (run_dir / "figures").iterdir()}


@pytest.mark.slow
def test_report_of_a_real_tiny_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data_dir = os.environ.get("QHQCNN_DATA_DIR") or str(REPO.parent / "shared" / "medmnist")
    if not (Path(data_dir) / "breastmnist.npz").exists():
        pytest.skip(f"breastmnist.npz is not in {data_dir}")
    monkeypatch.setenv("QHQCNN_DATA_DIR", data_dir)
    out = tmp_path / "run"
    args = [
        "train",
        "--dataset",
        "breastmnist",
        "--max-train",
        "64",
        "--max-eval",
        "32",
        "--epochs",
        "2",
        "--model",
        "classical",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(args) == 0
    history = json.loads((out / "history.json").read_text())
    assert {"train_loss", "train_acc", "train_auc", "val_acc", "val_auc"} <= set(history[0])
    assert main(["report", str(out)]) == 0
    report = check_report(out, ["training_curves.png", "roc_test.png", "confusion_test.png"])
    metrics = json.loads((out / "metrics_test.json").read_text())
    assert f"| {metrics['acc']:.4f} | {metrics['auc']:.4f} |" in report
    classical = json.loads((out / "config.json").read_text())["parameters"]["classical"]
    assert "breastmnist" in report and f"| {classical:,} |" in report


def _synthetic_study() -> dict:
    """Three models × 8 seeds with known values; comparisons from the study's own code."""
    from qhqcnn.study.reproduce import compare_all

    rng = np.random.default_rng(0)
    shift = {"hqcnn": -0.05, "classical": 0.0, "backbone-head": 0.0}
    cells = [
        {"dataset": "bloodmnist", "model": m, "seed": s,
         "test_acc": 0.9 + shift[m] + 0.01 * rng.standard_normal(),
         "test_auc": 0.95 + 0.01 * rng.standard_normal()}
        for m in shift for s in range(8)
    ]  # fmt: skip
    comparisons = compare_all(cells, "bloodmnist", [("hqcnn", "classical"),
                                                   ("classical", "backbone-head")])  # fmt: skip
    return {"cells": cells, "models": ["hqcnn", "classical", "backbone-head", "resnet18"],
            "comparisons": {"bloodmnist": comparisons}}  # fmt: skip


def test_study_figure_draws_the_runs_and_the_table_comparisons() -> None:
    from matplotlib.collections import LineCollection

    from qhqcnn.reporting.study_figure import plot_study

    study = _synthetic_study()
    fig = plot_study(study, "bloodmnist", target=(0.966, 0.998))
    (acc_runs, auc_runs), (acc_diff, auc_diff) = np.array(fig.axes).reshape(2, 2)
    # one dot per run, and resnet18 (no finished run) is left out of the axis
    assert [t.get_text() for t in acc_runs.get_xticklabels()] == [
        "hqcnn (n=8)", "classical (n=8)", "backbone-head (n=8)"]  # fmt: skip
    assert sum(len(c.get_offsets()) for c in acc_runs.collections
               if not isinstance(c, LineCollection)) == 24  # fmt: skip
    bars = [c for c in acc_runs.collections if isinstance(c, LineCollection)]
    means = [seg[0][1] for c in bars for seg in c.get_segments()]
    expected = [np.mean([c["test_acc"] for c in study["cells"] if c["model"] == m])
                for m in ("hqcnn", "classical", "backbone-head")]  # fmt: skip
    np.testing.assert_allclose(means, expected)
    assert 0.966 in [line.get_ydata()[0] for line in acc_runs.get_lines()]  # the target
    assert 8 == sum(1 for line in acc_runs.get_lines() if len(line.get_xdata()) == 3)  # seeds
    # the forest plot: each comparison's mean difference, red exactly where Holm rejects
    comps = [c for c in study["comparisons"]["bloodmnist"] if c["metric"] == "test_acc"]
    centers = [line.get_xdata()[0] for line in acc_diff.get_lines() if line.get_marker() == "o"]
    np.testing.assert_allclose(centers, [c["mean_difference"] for c in comps])
    colors = [line.get_color() for line in acc_diff.get_lines() if line.get_marker() == "o"]
    assert comps[0]["p_holm"] <= 0.05 < comps[1]["p_holm"]  # hqcnn is 0.05 below, by design
    assert colors == ["C3", "0.3"]
    labels = [t.get_text() for t in acc_diff.texts]
    assert labels == [f"Holm p {c['p_holm']:.3g}" for c in comps]
    assert [t.get_text() for t in acc_diff.get_yticklabels()] == [
        "hqcnn − classical (n=8)", "classical − backbone-head (n=8)"]  # fmt: skip
    assert all(t.get_text() == "" for t in auc_diff.get_yticklabels())  # one set of names
    with pytest.raises(ValueError, match="no finished run of pathmnist"):
        plot_study(study, "pathmnist")
