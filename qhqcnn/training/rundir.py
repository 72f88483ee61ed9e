"""The run directory: one class that owns its layout, so no other module spells a file name.

A run directory holds::

    config.json                      the run record: config, data checksums, parameters, versions
    history.json, history.csv        one row per finished epoch (losses, ACC, AUC, times)
    last.pt                          the last finished epoch (model, optimiser, RNG): --resume
    previous.pt                      the epoch before it (--resume's fallback if last.pt is bad)
    best.pt                          the best validation AUC so far: what evaluation loads
    metrics_<split><tag>.json        ACC/AUC of best.pt on a split (tag: another backend)
    predictions_<split><tag>.npz     y_true and y_score of that evaluation
    report.md, figures/              ``qhqcnn report``
    tensorboard/                     TensorBoard event files, when tensorboard is installed
    checksums.json                   SHA-256 of every checkpoint, metrics and predictions file,
                                     recorded when it is written and checked when it is loaded
    .lock                            the lock of the process training or evaluating the run

One process at a time writes a run directory: training, resuming and evaluating hold its
exclusive lock (:meth:`RunDir.lock`), and a second process gets a
:class:`~qhqcnn.errors.LockedError` naming the holder.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from qhqcnn.config import TrainConfig
from qhqcnn.errors import ConfigError, IntegrityError, QhqcnnError, RunNotFoundError
from qhqcnn.io.files import atomic_write_text, read_json, remove_stale_temporaries
from qhqcnn.io.integrity import Checksums


class RunDir:
    """The files of one run directory (see the module docstring).

    Args:
        path: the directory (it need not exist yet).
    """

    CONFIG = "config.json"
    HISTORY = "history.json"
    HISTORY_CSV = "history.csv"
    LAST = "last.pt"
    PREVIOUS = "previous.pt"
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
    def previous_checkpoint(self) -> Path:
        return self.path / self.PREVIOUS

    @property
    def checksums(self) -> Checksums:
        """The SHA-256 record of the run's checkpoints and results."""
        return Checksums(self.path)

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
        """The whole run record saved in ``config.json`` (a :class:`ConfigError` if malformed)."""
        self.require()
        try:
            record = read_json(self.config_path)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{self.config_path} is not readable JSON ({exc})") from exc
        if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
            raise ConfigError(f"{self.config_path} is not a qhqcnn run record (no config)")
        if not isinstance(record.get("data", {}), dict):
            raise ConfigError(f"{self.config_path} is not a qhqcnn run record (bad data entry)")
        return record

    def config(self) -> TrainConfig:
        """The run's :class:`~qhqcnn.config.TrainConfig`."""
        saved = self.record()["config"]
        try:
            return TrainConfig.from_dict(saved)
        except QhqcnnError as exc:
            raise ConfigError(f"{self.config_path} holds an invalid config: {exc}") from exc
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise ConfigError(
                f"{self.config_path} holds an invalid config ({type(exc).__name__}: {exc})"
            ) from exc

    def history(self) -> list[dict[str, Any]]:
        """The finished epochs' records (``[]`` before the first epoch ends)."""
        return read_json(self.history_path) if self.history_path.exists() else []

    # -- locking, integrity --------------------------------------------------------------------
    def lock(self) -> AbstractContextManager[None]:
        """The run directory's exclusive lock (created with the directory if needed).

        Held while training, resuming or evaluating; a second process gets a
        :class:`~qhqcnn.errors.LockedError` naming the holder. The kernel frees it when the
        holder dies, so a lock is never stale.
        """
        from qhqcnn.io.lock import exclusive_lock

        return exclusive_lock(self.path, "run directory")

    def clean_temporaries(self) -> list[Path]:
        """Remove the temporary files of writes a killed process never finished (under the
        lock only)."""
        return remove_stale_temporaries(self.path)

    def save_file(self, path: Path, write: Callable[[Path], None], **kwargs: Any) -> Path:
        """Write one of the run's files atomically and record its SHA-256."""
        return self.checksums.write(path, write, **kwargs)

    def save_checkpoint(self, path: Path, state: dict[str, Any], *, keep_previous=None) -> Path:
        """``torch.save`` a checkpoint atomically with its hash (``keep_previous``: move the
        current file there first)."""
        from qhqcnn.io.files import torch_bytes

        data = torch_bytes(state)
        return self.save_file(path, lambda tmp: tmp.write_bytes(data), keep_previous=keep_previous)

    def verify(self, path: Path, what: str = "file") -> None:
        """Raise :class:`~qhqcnn.errors.IntegrityError` unless ``path`` matches its recorded
        SHA-256."""
        self.checksums.verify(path, what)

    def load_checkpoint(self, path: Path) -> dict[str, Any]:
        """A checkpoint verified against its recorded hash and loaded onto the CPU.

        Raises :class:`~qhqcnn.errors.IntegrityError` when it is corrupt or unreadable.
        """
        import torch

        if not path.exists():
            raise RunNotFoundError(f"{path} does not exist")
        self.verify(path, "checkpoint")
        try:
            state = torch.load(path, weights_only=False, map_location="cpu")
        except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint is the same error
            raise IntegrityError(f"cannot read checkpoint {path}: {exc}") from exc
        if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
            raise IntegrityError(f"{path} is not a qhqcnn checkpoint (no model state)")
        return state

    # -- writing -------------------------------------------------------------------------------
    def write_history(self, history: list[dict[str, Any]]) -> None:
        """``history.json`` and the same rows as ``history.csv``, both atomically."""
        atomic_write_text(self.history_path, json.dumps(history, indent=2, default=str) + "\n")
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


def load_model_state(model: Any, state: dict[str, Any], path: Path) -> None:
    """``model.load_state_dict(state["model"])``, or an :class:`IntegrityError` saying the
    checkpoint at ``path`` does not fit the run's model."""
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])
        raise IntegrityError(
            f"{path} does not fit this run's model (was it copied from another run?): {detail}"
        ) from exc
