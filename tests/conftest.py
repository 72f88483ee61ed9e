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
