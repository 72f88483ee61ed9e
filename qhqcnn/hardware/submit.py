"""Create a job record and submit its chunks, all inside one Runtime ``Batch``.

The manifest is written atomically before each submission (chunk ``submitting``) and after it
(``submitted`` with the job id), so a process killed between two submissions leaves a record
that says exactly which chunks have a job and which must be submitted again.
"""

from __future__ import annotations

import hashlib
import re
import uuid
import warnings
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from qhqcnn.backends.devices import known_secrets
from qhqcnn.backends.trim import needs_trimming, trimmed_execution
from qhqcnn.errors import BackendError
from qhqcnn.hardware import jobs
from qhqcnn.hardware.collect import collect
from qhqcnn.hardware.manifest import (
    CIRCUIT_FILE,
    FAILED,
    INPUTS_FILE,
    MANIFEST_FILE,
    PENDING,
    SCHEMA,
    SUBMITTED,
    SUBMITTING,
    JobRecord,
    JobRecordError,
    now,
    write_json,
)
from qhqcnn.hardware.plan import HardwarePlan
from qhqcnn.hardware.primitives import (
    EXECUTOR,
    executor_estimator_class,
    legacy_estimator_class,
    make_estimator,
)
from qhqcnn.hardware.settings import DEFAULT_JOBS_DIR, ExecutionSettings
from qhqcnn.io.files import environment_record


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def default_job_name(plan: HardwarePlan) -> str:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run = Path(plan.inputs.run_dir).resolve().name
    return re.sub(
        r"[^A-Za-z0-9._-]+", "-", f"{run}-{plan.backend_name}-{plan.inputs.split}-{stamp}"
    )


def _observable_records(plan: HardwarePlan) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "terms": [[p, [int(q) for q in qubits], float(np.real(c))] for p, qubits, c in terms],
        }
        for name, terms in zip(
            plan.template.output_names,
            (obs.to_sparse_list() for obs in plan.prepared.observables),
            strict=True,
        )
    ]


def _primitive_class(kind: str) -> str:
    cls = executor_estimator_class() if kind == EXECUTOR else legacy_estimator_class()
    return f"{cls.__module__}.{cls.__qualname__}" if cls else "unavailable"


def _manifest(plan: HardwarePlan, record_id: str) -> dict[str, Any]:
    inputs = plan.inputs
    checkpoint = Path(inputs.run_dir) / "best.pt"
    circuit = plan.prepared.circuit
    return {
        "schema": SCHEMA,
        "id": record_id,
        "created": now(),
        "updated": now(),
        "run": {
            "dir": inputs.run_dir,
            "dataset": inputs.dataset,
            "relabel": inputs.relabel,
            "task": inputs.task,
            "n_channels": inputs.n_channels,
            "n_classes": inputs.n_classes,
            "model": inputs.spec.to_dict(),
            "checkpoint_epoch": inputs.checkpoint_epoch,
            "image_size": inputs.image_size,
            "checkpoint_sha256": _sha256(checkpoint) if checkpoint.exists() else None,
        },
        "backend": {
            "name": plan.backend_name,
            "num_qubits": int(plan.backend.num_qubits),
            "local": plan.local,
            "mode": "local testing mode (fake backend)" if plan.local else "IBM Quantum Runtime",
        },
        "circuit": {
            "file": CIRCUIT_FILE,
            "template": plan.template.summary(),
            "transpile": plan.prepared.info,
            "num_device_qubits": int(circuit.num_qubits),
            "parameter_order": [p.name for p in circuit.parameters],
            "input_params": [p.name for p in plan.template.input_params],
            "weight_params": [p.name for p in plan.template.weight_params],
            "observables": _observable_records(plan),
        },
        "settings": plan.settings.to_dict(),
        "execution": {
            "primitive": plan.primitive,
            "primitive_class": _primitive_class(plan.primitive),
            "primitive_reason": plan.primitive_reason,
            "options": plan.options,
            "mitigation_requested": list(plan.settings.mitigation),
            "mitigation_applied": plan.applied,
            "usage_estimate": plan.usage,
            "warnings": [],
            "batches": [],
        },
        "inputs": {
            "file": INPUTS_FILE,
            "split": inputs.split,
            "n_images": plan.n_images,
            "rows_per_image": inputs.rows_per_image,
            "indices": inputs.indices,
        },
        "calibration": _calibration_manifest(plan),
        "chunks": [
            {**chunk, "status": PENDING, "job_id": None, "attempts": [], "error": None}
            for chunk in plan.chunks
        ],
        "environment": environment_record(),
        "events": [],
    }


def _calibration_manifest(plan: HardwarePlan) -> dict[str, Any] | None:
    if plan.calibration is None:
        return None
    return {
        "method": plan.settings.calibration,
        "split": plan.calibration.split,
        "n_images": plan.calibration.n_images,
        "rows": plan.n_calibration_rows,
        "start": plan.n_rows - plan.n_calibration_rows,
        "stop": plan.n_rows,
        "note": "training images run in the same Batch; the fit is written by `hardware "
        "report` to calibration.json (never fitted on the evaluated images)",
    }


def create_record(
    plan: HardwarePlan, jobs_dir: str | Path = DEFAULT_JOBS_DIR, name: str | None = None
) -> JobRecord:
    """Write a new job directory (circuit, inputs, classifier, manifest); submit nothing."""
    path = Path(jobs_dir) / (name or default_job_name(plan))
    if (path / MANIFEST_FILE).exists():
        raise JobRecordError(
            f"{path} already holds a job record; use `qhqcnn hardware retrieve {path}` to "
            "continue it, or choose another --name"
        )
    path.mkdir(parents=True, exist_ok=True)
    record_id = f"qhqcnn-{uuid.uuid4().hex[:12]}"
    record = JobRecord(path, _manifest(plan, record_id))
    record.secrets = known_secrets(plan.service)  # env token/instance, the account's
    record.write_circuit(plan.prepared.circuit)
    record.manifest["circuit"]["sha256"] = _sha256(path / CIRCUIT_FILE)
    inputs = plan.inputs
    write_json(
        path / INPUTS_FILE,
        {
            "split": inputs.split,
            "indices": inputs.indices,
            "labels": inputs.labels,
            "angles": inputs.angles,
            "weights": inputs.weights,
            "parameter_order": record.manifest["circuit"]["parameter_order"],
            "parameter_values": plan.values,
            **(
                {
                    "calibration": {
                        "split": plan.calibration.split,
                        "indices": plan.calibration.indices,
                        "labels": plan.calibration.labels,
                        "angles": plan.calibration.angles,
                    }
                }
                if plan.calibration is not None
                else {}
            ),
        },
    )
    record.write_classifier(inputs.classifier_state)
    record.note(f"record created for {plan.n_images} images in {len(plan.chunks)} chunk(s)")
    record.save()
    return record


def _pubs(chunk: dict[str, Any], circuit, observables, values: np.ndarray) -> list[tuple]:
    """One PUB per ``[start, stop)`` slice: (circuit, observables (1, k), values (n, 1, p))."""
    row = [list(observables)]
    return [(circuit, row, values[start:stop, None, :]) for start, stop in chunk["pubs"]]


def _set_job_tags(estimator: Any, tags: list[str]) -> None:
    try:
        estimator.options.environment.job_tags = tags
    except Exception:  # noqa: BLE001 - tags only help to recover lost job ids
        pass


def submit_chunks(
    record: JobRecord,
    backend: Any,
    indices: Iterable[int],
    *,
    circuit=None,
) -> list[int]:
    """Submit the given chunks in one ``Batch``; returns the indices submitted.

    A submission that raises marks its chunk ``failed`` (saved) and stops with a
    :class:`BackendError`; chunks not reached stay ``pending`` for ``retrieve``.
    """
    from qiskit_ibm_runtime import Batch

    indices = list(indices)
    if not indices:
        return []
    circuit = circuit if circuit is not None else record.load_circuit()
    observables = record.observables()
    values = record.inputs()["parameter_values"]
    execution = record.manifest["execution"]
    settings = ExecutionSettings.from_dict(record.manifest["settings"])
    options = settings.estimator_options()
    if execution["primitive"] == EXECUTOR and needs_trimming(backend, record.local):
        # Local testing mode only: simulate the used qubits (see qhqcnn.backends.trim).
        backend, circuit, observables, physical = trimmed_execution(
            record.backend_name, circuit, observables
        )
        if execution.get("trimmed_to") != physical:
            execution["trimmed_to"] = physical
            record.note(f"local executor runs on {record.backend_name} trimmed to {physical}")
    submitted: list[int] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Batch(backend=backend) as batch:
            execution["batches"].append({"opened": now(), "id": batch.session_id})
            estimator = make_estimator(execution["primitive"], batch, options)
            for index in indices:
                chunk = record.chunks[index]
                tags = ["qhqcnn", record.manifest["id"], f"{record.manifest['id']}-chunk-{index}"]
                _set_job_tags(estimator, tags)
                attempt: dict[str, Any] = {"started": now(), "job_id": None}
                chunk["attempts"].append(attempt)
                chunk.update(status=SUBMITTING, job_id=None, error=None)
                record.save()  # before: a crash from here on leaves "submitting", no job id
                try:
                    job = estimator.run(_pubs(chunk, circuit, observables, values))
                except Exception as exc:  # noqa: BLE001 - the service raises many types
                    message = record.clean(f"{type(exc).__name__}: {exc}")
                    chunk.update(status=FAILED, error=f"submission failed: {message}")
                    attempt["error"] = chunk["error"]
                    record.note(f"chunk {index}: submission failed ({message})")
                    record.save()
                    raise BackendError(
                        f"chunk {index} of {record.path} could not be submitted: {message}. "
                        f"Finished chunks are kept; `qhqcnn hardware retrieve {record.path}` "
                        "submits what is missing."
                    ) from exc
                job_id = job.job_id()
                if record.local:
                    jobs.register_local_job(job)
                attempt.update(job_id=job_id, submitted=now())
                estimate = None if record.local else jobs.usage_estimation(job)
                if estimate is not None:
                    attempt["usage_estimation"] = estimate
                chunk.update(status=SUBMITTED, job_id=job_id)
                record.save()  # after: the job id is on disk before the next submission
                submitted.append(index)
    messages = sorted({str(w.message) for w in caught} - set(execution["warnings"]))
    if messages:
        execution["warnings"].extend(messages)
        record.save()
    return submitted


def submit(
    plan: HardwarePlan,
    jobs_dir: str | Path = DEFAULT_JOBS_DIR,
    *,
    name: str | None = None,
    wait: bool | None = None,
) -> JobRecord:
    """Create the record and submit every chunk; returns at once for real devices.

    The record is locked while this runs (a concurrent ``retrieve`` on it is refused).

    Local testing-mode jobs live only in this process, so for fake backends (or ``wait=True``)
    the results are collected and saved before returning.
    """
    from qhqcnn.io.lock import exclusive_lock

    name = name or default_job_name(plan)
    with exclusive_lock(Path(jobs_dir) / name, "job record"):
        record = create_record(plan, jobs_dir, name)
        submit_chunks(
            record,
            plan.backend,
            range(len(record.chunks)),
            circuit=plan.prepared.circuit,
        )
        if wait or (wait is None and plan.local):
            collect(record, service=plan.service, wait=True)
    return record
