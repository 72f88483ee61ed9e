"""Shared fixtures: the real MedMNIST data directory (``../shared/medmnist`` in CI)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def real_data_dir() -> Path:
    env = os.environ.get("QHQCNN_DATA_DIR")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "medmnist"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The folder with the official MedMNIST files; tests needing one skip when it is absent."""
    return real_data_dir()


@pytest.fixture(scope="session")
def breast_dir(data_dir: Path) -> str:
    if not (data_dir / "breastmnist.npz").exists():
        pytest.skip(f"breastmnist.npz not found in {data_dir}")
    return str(data_dir)


@pytest.fixture(autouse=True)
def _quiet_matplotlib(monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")


@pytest.fixture
def check_run():
    """:func:`check_run_outputs`, for tests that train a run."""
    return check_run_outputs


def check_run_outputs(run_dir: Path, n_images: int) -> dict:
    """What a finished run must have produced, checked against each other: the test metrics are
    medmnist's ACC/AUC of the saved predictions, the scores are probabilities, and the
    evaluated checkpoint is the epoch with the best validation AUC. Returns the metrics."""
    import json

    import numpy as np

    from qhqcnn.data import medmnist_info

    metrics = json.loads((Path(run_dir) / "metrics_test.json").read_text())
    history = json.loads((Path(run_dir) / "history.json").read_text())
    task = json.loads((Path(run_dir) / "config.json").read_text())["data"]["task"]
    with np.load(Path(run_dir) / "predictions_test.npz") as saved:
        y_true, y_score = saved["y_true"], saved["y_score"]
    assert metrics["n_images"] == n_images == len(y_true) == len(y_score)
    assert np.all((y_score >= 0) & (y_score <= 1))
    if task != "multi-label, binary-class":
        np.testing.assert_allclose(y_score.sum(axis=1), 1.0, atol=1e-6)
    labels = y_true.reshape(len(y_true), -1)
    assert metrics["acc"] == medmnist_info.getACC(labels, y_score, task)
    assert metrics["auc"] == medmnist_info.getAUC(labels, y_score, task)
    best = max(history, key=lambda record: record["val_auc"])  # the first epoch with the best
    assert metrics["checkpoint_epoch"] == best["epoch"]
    return metrics


def _issue_layer(num_qubits: int, layers: int = 3):
    """RY(x) encoding + layers x [U3 on every qubit + CX ring] (the layer of issue #16 and of
    benchmarks/bench_peers.py): ``(circuit, inputs, weights)``."""
    from qiskit import QuantumCircuit
    from qiskit.circuit import ParameterVector

    x = ParameterVector("x", num_qubits)
    w = ParameterVector("w", 3 * layers * num_qubits)
    qc = QuantumCircuit(num_qubits)
    for i in range(num_qubits):
        qc.ry(x[i], i)
    k = 0
    for _ in range(layers):
        for i in range(num_qubits):
            qc.u(w[k], w[k + 1], w[k + 2], i)
            k += 3
        for i in range(num_qubits):
            qc.cx(i, (i + 1) % num_qubits)
    return qc, list(x), list(w)


@pytest.fixture
def issue_layer():
    """The issue-#16 layer builder, ``issue_layer(num_qubits, layers=3)``."""
    return _issue_layer
