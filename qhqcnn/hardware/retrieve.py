"""Status and retrieval of a job record; resubmission of only what is missing or failed."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from qhqcnn.backends.devices import get_backend, known_secrets, runtime_service
from qhqcnn.hardware import jobs
from qhqcnn.hardware.collect import collect
from qhqcnn.hardware.manifest import (
    CIRCUIT_FILE,
    DONE,
    RESUBMITTABLE,
    SUBMITTED,
    JobRecord,
    JobRecordError,
    load_record,
)
from qhqcnn.hardware.submit import submit_chunks


def _service_for(record: JobRecord, service: Any) -> Any:
    """The Runtime service of a real-device record (clear error without credentials)."""
    if service is None and not record.local:
        service = runtime_service()
    record.secrets = known_secrets(service)
    return service


def chunk_states(
    job: str | Path | JobRecord, *, service: Any = None, live: bool = True
) -> list[dict[str, Any]]:
    """Each chunk's recorded status and (``live``) its job's state now; writes nothing."""
    record = job if isinstance(job, JobRecord) else load_record(job)
    if live:
        service = _service_for(record, service)
    states = []
    for chunk in record.chunks:
        live_state = None
        if live and chunk["status"] == SUBMITTED and chunk["job_id"]:
            job = jobs.find_job(chunk["job_id"], local=record.local, service=service)
            live_state = jobs.job_state(job) if job is not None else jobs.NOT_FOUND
        first, stop = record.image_span(chunk)
        states.append(
            {
                "index": chunk["index"],
                "images": f"{first}–{stop - 1}",
                "status": chunk["status"],
                "job_id": chunk["job_id"],
                "job_state": live_state,
                "result": chunk["status"] == DONE,
                "error": chunk.get("error"),
            }
        )
    return states


def format_states(record: JobRecord, states: list[dict[str, Any]]) -> str:
    """A table of chunk states with a one-line summary."""
    lines = [
        f"{record.path}: {record.backend_name} ({record.manifest['backend']['mode']}), "
        f"{record.manifest['inputs']['n_images']} images, {len(states)} chunk(s)",
        f"{'chunk':>5}  {'images':<11}{'status':<12}{'job state':<12}job id",
    ]
    for s in states:
        lines.append(
            f"{s['index']:>5}  {s['images']:<11}{s['status']:<12}{s['job_state'] or '-':<12}"
            f"{s['job_id'] or '-'}" + (f"  ({s['error']})" if s["error"] else "")
        )
    done = sum(s["status"] == DONE for s in states)
    todo = sum(s["status"] in RESUBMITTABLE for s in states)
    lines.append(
        f"{done}/{len(states)} chunk(s) have results; {todo} would be submitted by retrieve"
    )
    return "\n".join(lines)


def _check_circuit(record: JobRecord) -> None:
    expected = record.manifest["circuit"].get("sha256")
    path = record.path / CIRCUIT_FILE
    if expected and path.exists() and hashlib.sha256(path.read_bytes()).hexdigest() != expected:
        raise JobRecordError(f"{path} changed since submission; refusing to resubmit from it")


def retrieve(
    job_dir: str | Path,
    *,
    resubmit: bool = True,
    wait: bool = False,
    service: Any = None,
) -> JobRecord:
    """Save every finished result, then submit again the chunks with none.

    Chunks that are missing (never submitted, or killed mid-submission), failed, cancelled or
    lost are submitted again in one new ``Batch`` with the circuit saved at submission; chunks
    with a saved result or a job still queued/running are left alone.
    """
    record = load_record(job_dir)
    service = _service_for(record, service)
    collect(record, service=service, wait=wait)
    todo = [c["index"] for c in record.chunks if c["status"] in RESUBMITTABLE]
    if resubmit and todo:
        _check_circuit(record)
        backend = get_backend(record.backend_name, service=service)
        record.note(f"resubmitting chunk(s) {todo}")
        submit_chunks(record, backend, todo)
        collect(record, service=service, wait=wait or record.local)
    return record
