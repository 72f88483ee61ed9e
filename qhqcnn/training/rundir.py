"""The run directory: one class that owns its layout, so no other module spells a file name.

A run directory holds::

    config.json                      the run record: config, data checksums, parameters, versions
    history.json, history.csv        one row per finished epoch (losses, ACC, AUC, times)
    last.pt                          the last finished epoch (model, optimiser, RNG): --resume
    best.pt                          the best validation AUC so far: what evaluation loads
    metrics_<split><tag>.json        ACC/AUC of best.pt on a split (tag: another backend)
    predictions_<split><tag>.npz     y_true and y_score of that evaluation
    report.md, figures/              ``qhqcnn report``
    tensorboard/                     TensorBoard event files, when tensorboard is installed
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

from qhqcnn.config import TrainConfig
from qhqcnn.errors import ConfigError, RunNotFoundError
from qhqcnn.io.files import atomic_write_text, read_json


class RunDir:
    """The files of one run directory (see the module docstring).

    Args:
        path: the directory (it need not exist yet).
    """

    CONFIG = "config.json"
    HISTORY = "history.json"
    HISTORY_CSV = "history.csv"
    LAST = "last.pt"
    BEST = "best.pt"
    REPORT = "report.md"
    FIGURES = "figures"
    TENSORBOARD = "tensorboard"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    # -- paths ---------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / self.CONFIG

    @property
    def history_path(self) -> Path:
        return self.path / self.HISTORY

    @property
    def history_csv_path(self) -> Path:
        return self.path / self.HISTORY_CSV

    @property
    def last_checkpoint(self) -> Path:
        return self.path / self.LAST

    @property
    def best_checkpoint(self) -> Path:
        return self.path / self.BEST

    @property
    def report_path(self) -> Path:
        return self.path / self.REPORT

    @property
    def figures_dir(self) -> Path:
        return self.path / self.FIGURES

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / self.TENSORBOARD

    def metrics_path(self, split: str, tag: str = "") -> Path:
        """``metrics_<split><tag>.json`` (``tag``: :func:`~qhqcnn.evaluation.result_tag`)."""
        return self.path / f"metrics_{split}{tag}.json"

    def predictions_path(self, split: str, tag: str = "") -> Path:
        return self.path / f"predictions_{split}{tag}.npz"

    def metrics_files(self) -> list[Path]:
        """Every ``metrics_*.json`` of the run, sorted."""
        return sorted(self.path.glob("metrics_*.json"))

    # -- reading -------------------------------------------------------------------------------
    def exists(self) -> bool:
        """Whether a run was started here (its ``config.json`` exists)."""
        return self.config_path.exists()

    def require(self) -> RunDir:
        """``self``, or a :class:`~qhqcnn.errors.RunNotFoundError` if no run is here."""
        if not self.exists():
            raise RunNotFoundError(
                f"{self.path} is not a qhqcnn run directory ({self.CONFIG} missing)"
            )
        return self

    def record(self) -> dict[str, Any]:
        """The whole run record saved in ``config.json``."""
        self.require()
        record = read_json(self.config_path)
        if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
            raise ConfigError(f"{self.config_path} is not a qhqcnn run record")
        return record

    def config(self) -> TrainConfig:
        """The run's :class:`~qhqcnn.config.TrainConfig`."""
        try:
            return TrainConfig.from_dict(self.record()["config"])
        except TypeError as exc:
            raise ConfigError(f"{self.config_path} holds an invalid config: {exc}") from exc

    def history(self) -> list[dict[str, Any]]:
        """The finished epochs' records (``[]`` before the first epoch ends)."""
        return read_json(self.history_path) if self.history_path.exists() else []

    # -- writing -------------------------------------------------------------------------------
    def write_history(self, history: list[dict[str, Any]]) -> None:
        """``history.json`` and the same rows as ``history.csv``, both atomically."""
        from qhqcnn.io.files import atomic_write_json

        atomic_write_json(self.history_path, history)
        atomic_write_text(self.history_csv_path, history_csv(history))


class TensorBoardLog:
    """Per-epoch scalars in ``RUN/tensorboard`` when the ``tensorboard`` package is installed
    (a no-op otherwise): ``tensorboard --logdir runs`` then shows every run's curves."""

    def __init__(self, run_dir: RunDir, enabled: bool = True) -> None:
        import importlib.util

        self.writer = None
        if enabled and importlib.util.find_spec("tensorboard") is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(run_dir.tensorboard_dir))

    def epoch(self, record: dict[str, Any]) -> None:
        """Log every numeric value of one epoch's record (``train_loss``, ``val_auc``, ...)."""
        if self.writer is None:
            return
        for key, value in record.items():
            if key != "epoch" and isinstance(value, int | float):
                group = key.replace("_", "/", 1) if "_" in key else key
                self.writer.add_scalar(group, value, record["epoch"])
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def history_csv(history: list[dict[str, Any]]) -> str:
    """The epoch records as CSV text, one column per key (in first-seen order)."""
    columns: list[str] = []
    for row in history:
        columns += [key for key in row if key not in columns]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    return out.getvalue()
