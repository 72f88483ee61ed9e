"""Fetch the results of submitted chunks and save each one as soon as it is available."""

from __future__ import annotations

from typing import Any

from qhqcnn.errors import BackendError
from qhqcnn.hardware import jobs
from qhqcnn.hardware.manifest import (
    CANCELLED,
    DONE,
    FAILED,
    LOST,
    SUBMITTED,
    SUBMITTING,
    JobRecord,
    now,
)
from qhqcnn.hardware.primitives import EXECUTOR, applied_mitigation


def _lookup(record: JobRecord, job_id: str, service: Any) -> Any | None:
    """The job, ``None`` if the service says it does not exist; other failures raise."""
    if service is None:
        if not record.local:
            raise BackendError("looking up IBM Quantum jobs needs a QiskitRuntimeService")
        return jobs.find_job(job_id, local=True)
    try:
        return service.job(job_id)
    except Exception as exc:  # noqa: BLE001
        if "not found" in str(exc).lower() or type(exc).__name__ == "RuntimeJobNotFound":
            return None
        raise BackendError(f"cannot look up job {job_id}: {exc}") from None


def _mark(record: JobRecord, chunk: dict[str, Any], status: str, error: str | None) -> None:
    error = record.clean(error) if error else error
    chunk.update(status=status, error=error)
    if chunk["attempts"]:
        chunk["attempts"][-1].update(status=status, error=error, ended=now())
    record.note(f"chunk {chunk['index']}: {status}" + (f" ({error})" if error else ""))
    record.save()


def _save_result(record: JobRecord, chunk: dict[str, Any], job: Any, result: Any) -> None:
    arrays = jobs.result_arrays(result)
    expected = (chunk["stop"] - chunk["start"], record.num_outputs)
    if arrays["evs"].shape != expected:
        raise BackendError(
            f"job {chunk['job_id']} returned values of shape {arrays['evs'].shape}, "
            f"expected {expected}"
        )
    execution = record.manifest["execution"]
    options = arrays["metadata"].get("options")
    if execution["primitive"] == EXECUTOR and isinstance(options, dict):
        applied = applied_mitigation(EXECUTOR, record.local, execution["options"], options)
    else:
        applied = execution["mitigation_applied"]
    first, stop = record.image_span(chunk)
    indices = record.manifest["inputs"]["indices"][first:stop]
    record.write_result(
        chunk["index"],
        {
            "chunk": chunk["index"],
            "job_id": chunk["job_id"],
            "backend": record.backend_name,
            "start": chunk["start"],
            "stop": chunk["stop"],
            "image_indices": indices,
            "fetched": now(),
            "mitigation_applied": applied,
            "usage": jobs.job_usage(job),
            **arrays,
        },
    )
    chunk["applied"] = applied["techniques"]
    _mark(record, chunk, DONE, None)


def _result_failed(record: JobRecord, chunk: dict[str, Any], job: Any, exc: Exception) -> None:
    """A job that failed or was cancelled is marked so; a failed download is tried again later."""
    detail = jobs.error_message(job) or f"{type(exc).__name__}: {exc}"
    try:
        state = jobs.job_state(job)
    except Exception:  # noqa: BLE001 - the service may be unreachable
        state = "UNKNOWN"
    if state == jobs.CANCELLED_STATE:
        _mark(record, chunk, CANCELLED, detail)
    elif state == jobs.ERROR_STATE:
        _mark(record, chunk, FAILED, detail)
    else:  # the job ran (or runs); only fetching its result failed: never pay for it twice
        record.note(record.clean(f"chunk {chunk['index']}: result not fetched ({detail})"))
        record.save()


def collect(record: JobRecord, *, service: Any = None, wait: bool = False) -> dict[str, int]:
    """Save the result of every submitted chunk whose job has finished (all, with ``wait``).

    Chunk states are updated in the manifest as they change; a job that errored or was
    cancelled is marked so (``retrieve`` submits it again), a local job whose process has ended
    is marked ``lost``. Returns how many chunks are in each state afterwards.
    """
    for chunk in record.chunks:
        status, index = chunk["status"], chunk["index"]
        if status == DONE:
            problem = record.result_problem(index)
            if problem is None:
                continue
            chunk["status"] = SUBMITTED  # its result is gone or corrupt: fetch it again by job id
            record.note(f"chunk {index}: {problem}; fetching it again")
            record.save()
        if status == SUBMITTING and chunk["job_id"] is None and not record.local:
            tags = [record.manifest["id"], f"{record.manifest['id']}-chunk-{index}"]
            found = jobs.recover_job_id(service, tags)
            if found:
                chunk.update(status=SUBMITTED, job_id=found)
                record.note(f"chunk {index}: recovered job id {found} from its tags")
                record.save()
        if chunk["status"] != SUBMITTED:
            continue
        job = _lookup(record, chunk["job_id"], service)
        if job is None:
            reason = (
                "local job ended with the process that submitted it"
                if record.local
                else "the service does not know this job id"
            )
            _mark(record, chunk, LOST, reason)
            continue
        state = jobs.job_state(job)
        if state == jobs.CANCELLED_STATE:
            _mark(record, chunk, CANCELLED, "job cancelled")
            continue
        if state == jobs.ERROR_STATE:
            _mark(record, chunk, FAILED, jobs.failure_reason(job))
            continue
        if state != jobs.DONE_STATE and not wait:
            continue
        try:
            result = job.result()
        except Exception as exc:  # noqa: BLE001 - failed jobs raise many types
            _result_failed(record, chunk, job, exc)
            continue
        _save_result(record, chunk, job, result)
    counts: dict[str, int] = {}
    for chunk in record.chunks:
        counts[chunk["status"]] = counts.get(chunk["status"], 0) + 1
    return counts
