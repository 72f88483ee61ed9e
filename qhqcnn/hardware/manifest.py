"""The job record directory: an atomically written manifest, the circuit, inputs and results.

Layout of a job directory::

    manifest.json       schema, run, backend, circuit facts, settings, chunks (job id, status)
    circuit.qpy         the ISA circuit, transpiled once (QPY keeps parameters and layout)
    inputs.json         image indices, labels, circuit input angles (``rows_per_image`` parameter
                        sets per image), trained circuit weights
    classifier.npz      the trained classical layers after the circuit (for the report; records
                        written before November 2026 have it as classifier.json)
    results/chunk-NNNN.json   one file per chunk, written when its job's result arrives
    report.md, report.json, report.png   written by ``qhqcnn hardware report``

Every file is written atomically and scrubbed of the IBM token and instance: neither is ever
stored. A manifest that cannot be read raises :class:`JobRecordError` and nothing is written.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from qhqcnn.errors import HardwareError, RunNotFoundError
from qhqcnn.io.files import atomic_save_npz, atomic_write, atomic_write_text

SCHEMA = "qhqcnn.hardware-job/1"
MANIFEST_FILE = "manifest.json"
CIRCUIT_FILE = "circuit.qpy"
INPUTS_FILE = "inputs.json"
CLASSIFIER_FILE = "classifier.npz"
LEGACY_CLASSIFIER_FILE = "classifier.json"
RESULTS_DIR = "results"

PENDING = "pending"  # never submitted
SUBMITTING = "submitting"  # written just before submission; no job id if the process died
SUBMITTED = "submitted"  # job id known, not final when last looked
DONE = "done"  # result saved under results/
FAILED = "failed"  # the submission or the job errored
CANCELLED = "cancelled"
LOST = "lost"  # a local-mode job whose process has ended (local jobs live in memory)
STATUSES = (PENDING, SUBMITTING, SUBMITTED, DONE, FAILED, CANCELLED, LOST)
#: Chunks that ``retrieve`` submits again.
RESUBMITTABLE = frozenset({PENDING, SUBMITTING, FAILED, CANCELLED, LOST})

_REQUIRED = ("schema", "run", "backend", "circuit", "settings", "execution", "inputs", "chunks")


class JobRecordError(HardwareError):
    """A job record directory is missing, corrupt or inconsistent."""


def now() -> str:
    """The current UTC time as ISO 8601 (seconds)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def jsonable(value: Any) -> Any:
    """``value`` with numpy arrays/scalars, tuples, sets and dates turned into JSON types."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret value replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _secrets(extra: Iterable[str] = ()) -> list[str]:
    from qhqcnn.backends.devices import known_secrets

    return sorted({*known_secrets(), *extra}, key=len, reverse=True)


def scrub_data(value: Any, secrets: list[str]) -> Any:
    """``value`` (JSON types) with every secret in every string replaced by ``***``."""
    if isinstance(value, str):
        return scrub(value, secrets)
    if isinstance(value, dict):
        return {scrub(k, secrets): scrub_data(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub_data(v, secrets) for v in value]
    return value


def write_json(path: str | Path, data: Any, secrets: Iterable[str] = ()) -> Path:
    """Write ``data`` as JSON atomically, with every known secret scrubbed."""
    known = _secrets(secrets)
    text = json.dumps(scrub_data(jsonable(data), known), indent=1, allow_nan=False) + "\n"
    return atomic_write_text(path, scrub(text, known))


def write_text(path: str | Path, text: str, secrets: Iterable[str] = ()) -> Path:
    """Write ``text`` atomically, with every known secret scrubbed."""
    return atomic_write_text(path, scrub(text, _secrets(secrets)))


def read_json_file(path: Path, what: str) -> Any:
    """Parse a JSON file of a job record, or raise a clear :class:`JobRecordError`."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise JobRecordError(f"{path} is missing: {what}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise JobRecordError(
            f"{path} is corrupt ({exc}); it has been left untouched. Restore it from a backup, "
            "or submit again into a new job directory."
        ) from None


def validate_manifest(manifest: Any, path: Path) -> dict[str, Any]:
    """Check the manifest's schema, keys and chunk table; raise :class:`JobRecordError`."""

    def fail(reason: str) -> JobRecordError:
        return JobRecordError(
            f"{path} is not a valid job manifest ({reason}); it has been left untouched. "
            "Restore it from a backup, or submit again into a new job directory."
        )

    if not isinstance(manifest, dict):
        raise fail("not a JSON object")
    if manifest.get("schema") != SCHEMA:
        raise fail(f"schema {manifest.get('schema')!r}, expected {SCHEMA!r}")
    missing = [key for key in _REQUIRED if key not in manifest]
    if missing:
        raise fail(f"missing {', '.join(missing)}")
    chunks = manifest["chunks"]
    if not isinstance(chunks, list) or not chunks:
        raise fail("no chunks")
    rows = len(manifest["inputs"].get("indices", [])) * rows_per_image(manifest)
    expected_start = 0
    for position, chunk in enumerate(chunks):
        if not isinstance(chunk, dict):
            raise fail(f"chunk {position} is not an object")
        if chunk.get("index") != position or chunk.get("start") != expected_start:
            raise fail(f"chunk {position} has a wrong index or start")
        if chunk.get("status") not in STATUSES:
            raise fail(f"chunk {position} has unknown status {chunk.get('status')!r}")
        expected_start = chunk.get("stop")
    if expected_start != rows:
        raise fail(f"chunks cover {expected_start} of {rows} parameter sets")
    return manifest


def rows_per_image(manifest: dict[str, Any]) -> int:
    """Circuit parameter sets per image: 1 (HQCNN, QCNN), patches × channels (quanv)."""
    return int(manifest["inputs"].get("rows_per_image", 1))


class JobRecord:
    """One job record directory and its manifest (kept in memory, saved atomically)."""

    def __init__(self, path: str | Path, manifest: dict[str, Any]) -> None:
        self.path = Path(path)
        self.manifest = manifest
        self.secrets: list[str] = []

    # -- manifest ----------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST_FILE

    @property
    def chunks(self) -> list[dict[str, Any]]:
        return self.manifest["chunks"]

    @property
    def rows_per_image(self) -> int:
        return rows_per_image(self.manifest)

    def image_span(self, chunk: dict[str, Any]) -> tuple[int, int]:
        """Positions ``[first, stop)`` (in the record's image list) of the images a chunk covers."""
        rows = self.rows_per_image
        return chunk["start"] // rows, -(-chunk["stop"] // rows)

    @property
    def backend_name(self) -> str:
        return self.manifest["backend"]["name"]

    @property
    def local(self) -> bool:
        return bool(self.manifest["backend"]["local"])

    def save(self) -> None:
        """Write the manifest atomically (the old one stays whole if this process dies)."""
        self.manifest["updated"] = now()
        write_json(self.manifest_path, self.manifest, self.secrets)

    def clean(self, text: str) -> str:
        """``text`` (e.g. a service error message) with every known secret scrubbed."""
        return scrub(text, _secrets(self.secrets))

    def note(self, message: str) -> None:
        """Append a line to the manifest's event log (saved with the next :meth:`save`)."""
        self.manifest.setdefault("events", []).append({"time": now(), "message": message})

    # -- files -------------------------------------------------------------------------------
    def result_path(self, index: int) -> Path:
        return self.path / RESULTS_DIR / f"chunk-{index:04d}.json"

    def write_result(self, index: int, data: dict[str, Any]) -> Path:
        return write_json(self.result_path(index), data, self.secrets)

    def read_result(self, index: int) -> dict[str, Any] | None:
        """The saved result of chunk ``index`` (``None`` if absent; error if unreadable)."""
        path = self.result_path(index)
        if not path.exists():
            return None
        data = read_json_file(path, "a chunk result")
        chunk = self.chunks[index]
        evs = np.asarray(data.get("evs", []), dtype=float) if isinstance(data, dict) else None
        if evs is None or evs.shape != (chunk["stop"] - chunk["start"], self.num_outputs):
            raise JobRecordError(f"{path} does not hold chunk {index}'s expectation values")
        return data

    @property
    def num_outputs(self) -> int:
        return len(self.manifest["circuit"]["observables"])

    def write_circuit(self, circuit) -> Path:
        from qiskit import qpy

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                qpy.dump(circuit, handle)

        return atomic_write(self.path / CIRCUIT_FILE, write)

    def load_circuit(self):
        """The ISA circuit saved at submission (never re-transpiled on resubmission)."""
        from qiskit import qpy

        path = self.path / CIRCUIT_FILE
        try:
            with open(path, "rb") as handle:
                (circuit,) = qpy.load(handle)
        except FileNotFoundError:
            raise JobRecordError(f"{path} is missing: the transpiled circuit") from None
        except Exception as exc:  # noqa: BLE001 - QPY raises many types on bad files
            raise JobRecordError(f"{path} is corrupt: {exc}") from None
        return circuit

    def observables(self) -> list:
        """The observables mapped to the device layout, in output order."""
        from qiskit.quantum_info import SparsePauliOp

        info = self.manifest["circuit"]
        return [
            SparsePauliOp.from_sparse_list(
                [(p, q, c) for p, q, c in obs["terms"]], num_qubits=info["num_device_qubits"]
            )
            for obs in info["observables"]
        ]

    def write_classifier(self, state: dict[str, Any]) -> None:
        """Save the trained layers after the circuit (a state dict of arrays)."""
        atomic_save_npz(self.path / CLASSIFIER_FILE, **{k: np.asarray(v) for k, v in state.items()})

    def classifier_state(self) -> dict[str, Any]:
        """The trained layers after the circuit, as saved by :meth:`write_classifier`."""
        path = self.path / CLASSIFIER_FILE
        if not path.exists() and (self.path / LEGACY_CLASSIFIER_FILE).exists():
            return read_json_file(self.path / LEGACY_CLASSIFIER_FILE, "the trained classifier")
        try:
            with np.load(path) as data:
                return {key: data[key] for key in data.files}
        except FileNotFoundError:
            raise JobRecordError(
                f"{path} is missing: the trained layers after the circuit"
            ) from None
        except Exception as exc:  # noqa: BLE001 - a truncated or foreign file
            raise JobRecordError(f"{path} is corrupt: {exc}") from None

    def inputs(self) -> dict[str, np.ndarray]:
        """Indices, labels, input angles and circuit weights as arrays."""
        data = read_json_file(self.path / INPUTS_FILE, "the circuit inputs")
        try:
            return {
                "indices": np.asarray(data["indices"], dtype=int),
                "labels": np.asarray(data["labels"]),
                "angles": np.asarray(data["angles"], dtype=float),
                "weights": np.asarray(data["weights"], dtype=float),
                "parameter_values": np.asarray(data["parameter_values"], dtype=float),
            }
        except (KeyError, TypeError, ValueError) as exc:
            raise JobRecordError(f"{self.path / INPUTS_FILE} is corrupt: {exc}") from None


def load_record(job_dir: str | Path) -> JobRecord:
    """Open an existing job directory (validating its manifest; nothing is written)."""
    path = Path(job_dir)
    if not path.is_dir():
        raise RunNotFoundError(f"no job record directory at {path}")
    manifest_path = path / MANIFEST_FILE
    if not manifest_path.exists():
        raise JobRecordError(f"{path} is not a job record directory ({MANIFEST_FILE} is missing)")
    manifest = validate_manifest(read_json_file(manifest_path, "the job manifest"), manifest_path)
    return JobRecord(path, manifest)
