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
    RESULTS_DIR,
    SUBMITTED,
    SUBMITTING,
    JobRecord,
    JobRecordError,
    load_record,
)
from qhqcnn.hardware.submit import submit_chunks
from qhqcnn.io.files import remove_stale_temporaries

#: ``chunk_states``' verdict on a chunk (what ``retrieve`` will do with it).
VERIFIED = "done"  # result file present and matching its recorded SHA-256
LOST = "lost"  # a job nobody can reach any more, or a submission killed before its id was saved
BROKEN = "no result"  # marked done, but its result file is missing or corrupt


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
        status = chunk["status"]
        if live and status == SUBMITTED and chunk["job_id"]:
            job = jobs.find_job(chunk["job_id"], local=record.local, service=service)
            live_state = jobs.job_state(job) if job is not None else jobs.NOT_FOUND
        problem = record.result_problem(chunk["index"]) if status == DONE else None
        verdict = _verdict(record, chunk, live_state, problem)
        first, stop = record.image_span(chunk)
        states.append(
            {
                "index": chunk["index"],
                "images": f"{first}–{stop - 1}",
                "status": status,
                "job_id": chunk["job_id"],
                "job_state": live_state,
                "result": status == DONE and problem is None,
                "verdict": verdict,
                "resubmit": _would_resubmit(record, chunk, verdict),
                "error": problem or chunk.get("error"),
            }
        )
    return states


def _verdict(
    record: JobRecord, chunk: dict[str, Any], live_state: str | None, problem: str | None
) -> str:
    status = chunk["status"]
    if status == DONE:
        return BROKEN if problem else VERIFIED
    if status == SUBMITTED and live_state == jobs.NOT_FOUND:
        return LOST
    if status == SUBMITTING and chunk["job_id"] is None:
        return LOST  # killed mid-submission: the job may exist, its id was never saved
    return status


def _would_resubmit(record: JobRecord, chunk: dict[str, Any], verdict: str) -> bool:
    """Whether ``retrieve`` submits this chunk again (a real job whose result file is bad is
    fetched again by its id instead; a local one died with its process)."""
    if chunk["status"] in RESUBMITTABLE or verdict == LOST:
        return True
    return verdict == BROKEN and record.local


def format_states(record: JobRecord, states: list[dict[str, Any]]) -> str:
    """A table of chunk states with a one-line summary."""
    from qhqcnn.io.lock import describe_holder, is_locked, read_holder

    lines = [
        f"{record.path}: {record.backend_name} ({record.manifest['backend']['mode']}), "
        f"{record.manifest['inputs']['n_images']} images, {len(states)} chunk(s)",
        f"{'chunk':>5}  {'images':<11}{'status':<12}{'job state':<12}job id",
    ]
    for s in states:
        shown = s.get("verdict") or s["status"]
        lines.append(
            f"{s['index']:>5}  {s['images']:<11}{shown:<12}{s['job_state'] or '-':<12}"
            f"{s['job_id'] or '-'}" + (f"  ({s['error']})" if s["error"] else "")
        )
    done = sum(bool(s["result"]) for s in states)
    lost = sum(s.get("verdict") == LOST for s in states)
    broken = sum(s.get("verdict") == BROKEN for s in states)
    todo = sum(bool(s.get("resubmit", s["status"] in RESUBMITTABLE)) for s in states)
    refetch = broken - sum(bool(s.get("resubmit")) and s.get("verdict") == BROKEN for s in states)
    summary = f"{done}/{len(states)} chunk(s) have verified results"
    if lost:
        summary += f"; {lost} lost (their jobs can no longer be reached)"
    if broken:
        summary += f"; {broken} marked done whose result file is missing or corrupt"
    summary += f"; {todo} would be submitted by retrieve"
    if refetch:
        summary += f", {refetch} fetched again by job id"
    lines.append(summary)
    if record.manifest_path.exists() and is_locked(record.path):
        lines.append(f"in use by {describe_holder(read_holder(record.path))}")
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

    The record is locked for the whole call: a second ``retrieve`` or ``submit`` on it gets a
    :class:`~qhqcnn.errors.LockedError` naming this process instead of paying for every
    chunk twice.
    """
    path = load_record(job_dir).path  # a clear error for a missing or corrupt record
    with JobRecord(path, {}).lock():
        record = load_record(path)  # what the previous holder left, read under the lock
        remove_stale_temporaries(record.path)
        remove_stale_temporaries(record.path / RESULTS_DIR)
        return _retrieve_locked(record, resubmit=resubmit, wait=wait, service=service)


def _retrieve_locked(record: JobRecord, *, resubmit: bool, wait: bool, service: Any) -> JobRecord:
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
