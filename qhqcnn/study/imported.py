"""Finished study cells carried over from another study's ``results.json``.

A study's run directories stay on the machine that trained them (checkpoints are large and are
kept outside the repository), but its ``results.json`` records every finished cell: test
metrics, test-set bootstrap intervals, epochs, wall time, parameter counts and the full config.
:func:`load_imported_cells` reads those records so that ``qhqcnn reproduce --import-cells``
can tabulate them beside the cells trained here, and train only the cells that neither has:
a study survives the loss of the machine it ran on, and can be finished on another one.

Each record is checked before it is used: it must name its dataset, model and seed, its config
must say the same, and its metrics must be numbers in [0, 1]. Two files that record the same
cell with different numbers are refused rather than mixed. An imported cell keeps the
provenance of the study that trained it (``imported_from``: file, date, commit and package
versions), also when a study built from imported cells is imported again.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from qhqcnn.errors import ConfigError, IntegrityError
from qhqcnn.io.files import read_json

#: (dataset, model, seed): one cell of a study
CellKey = tuple[str, str, int]

#: What an imported record must carry to be tabulated like a cell trained here.
REQUIRED_KEYS = (
    "dataset",
    "model",
    "seed",
    "test_acc",
    "test_auc",
    "epochs_run",
    "train_seconds",
    "parameters",
    "config",
)
#: Fields that decide a cell's numbers; two records of one cell must agree on them.
RESULT_KEYS = ("test_acc", "test_auc", "best_epoch", "epochs_run", "config")


def _check_record(cell: Any, where: str) -> CellKey:
    """The record's (dataset, model, seed), after checking it is a complete, consistent cell."""
    if not isinstance(cell, dict):
        raise IntegrityError(f"{where} is not a cell record (expected a JSON object)")
    absent = [key for key in REQUIRED_KEYS if key not in cell]
    if absent:
        raise IntegrityError(f"{where} lacks {', '.join(absent)}; not a finished study cell")
    for metric in ("test_acc", "test_auc"):
        value = cell[metric]
        if not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 <= value <= 1:
            raise IntegrityError(f"{where}: {metric} = {value!r} is not a number in [0, 1]")
    config = cell["config"]
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise IntegrityError(f"{where}: its config is not a training config")
    stated = (config.get("dataset"), config["model"].get("model"), config.get("seed"))
    key = (cell["dataset"], cell["model"], cell["seed"])
    if stated != key:
        raise IntegrityError(
            f"{where} is recorded as {'/'.join(map(str, key))} but its config says "
            f"{'/'.join(map(str, stated))}"
        )
    return key


def _provenance(path: Path, study: dict[str, Any]) -> dict[str, Any]:
    environment = study.get("environment", {})
    return {
        "file": str(path),
        "study_finished": study.get("finished"),
        "git_commit": environment.get("git_commit"),
        "packages": environment.get("packages", {}),
    }


def _results(path: Path) -> dict[str, Any]:
    try:
        study = read_json(path)
    except FileNotFoundError:
        raise ConfigError(f"--import-cells: {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IntegrityError(f"{path} is not a readable results.json ({exc})") from None
    if not isinstance(study, dict) or not isinstance(study.get("cells"), list):
        raise IntegrityError(f"{path} has no list of cells: not a study's results.json")
    return study


def load_imported_cells(paths: list[str | Path]) -> dict[CellKey, dict[str, Any]]:
    """Every finished cell recorded in the given ``results.json`` files, by (dataset, model,
    seed), each marked with where it came from (``imported_from``).

    Raises :class:`~qhqcnn.errors.IntegrityError` for an incomplete or inconsistent record, or
    when two files record the same cell with different results (identical copies are fine), and
    :class:`~qhqcnn.errors.ConfigError` for a file that does not exist.
    """
    cells: dict[CellKey, dict[str, Any]] = {}
    for path in map(Path, paths):
        study = _results(path)
        for index, record in enumerate(study["cells"]):
            key = _check_record(record, f"{path}: cell {index}")
            cell = dict(record)
            cell.setdefault("imported_from", _provenance(path, study))
            earlier = cells.get(key)
            if earlier is not None and any(earlier.get(k) != cell.get(k) for k in RESULT_KEYS):
                raise IntegrityError(
                    f"{'/'.join(map(str, key))} is recorded twice with different results "
                    f"({earlier['imported_from']['file']} and {path}); import one of them"
                )
            cells.setdefault(key, cell)
    return cells


def _seed_ranges(seeds: list[int]) -> str:
    """``0–3, 5, 7–8``: sorted seeds with consecutive runs joined."""
    runs: list[list[int]] = []
    for seed in sorted(seeds):
        if runs and seed == runs[-1][-1] + 1:
            runs[-1].append(seed)
        else:
            runs.append([seed])
    return ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}–{r[-1]}" for r in runs)


def describe_imported(cells: list[dict[str, Any]]) -> str | None:
    """One sentence naming the imported cells of a table and where they were trained, or
    ``None`` when every cell was trained here."""
    sources: dict[tuple, dict[str, list[int]]] = {}
    for cell in cells:
        origin = cell.get("imported_from")
        if origin is None:
            continue
        commit = (origin.get("git_commit") or "unknown")[:7]
        source = (origin["file"], origin.get("study_finished"), commit)
        sources.setdefault(source, {}).setdefault(cell["model"], []).append(cell["seed"])
    if not sources:
        return None
    parts = []
    for (file, finished, commit), models in sources.items():
        runs = ", ".join(
            f"{model} seed{'s' if len(seeds) > 1 else ''} {_seed_ranges(seeds)}"
            for model, seeds in models.items()
        )
        parts.append(f"{runs} (from `{file}`: study of {finished}, commit {commit})")
    return (
        "Imported cells (trained by an earlier study, possibly on another machine; their "
        "numbers and configs are that study's records, their run files are not here): "
        + "; ".join(parts)
        + "."
    )
