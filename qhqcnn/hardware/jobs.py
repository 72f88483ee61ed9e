"""Runtime job handles: find a job by id, read its state, turn its result into arrays.

Real jobs are found again through ``QiskitRuntimeService.job(job_id)`` from any process. Local
testing-mode jobs (``LocalRuntimeJob``) exist only in the memory of the process that submitted
them, so they are kept in an in-process registry; once that process has ended they are *lost*
and ``retrieve`` submits their chunks again.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: job id -> local job, for local testing mode (jobs live only in the submitting process).
_LOCAL_JOBS: dict[str, Any] = {}

#: Normalised job states (real jobs report strings, local jobs a ``JobStatus`` enum).
DONE_STATE = "DONE"
ERROR_STATE = "ERROR"
CANCELLED_STATE = "CANCELLED"
NOT_FOUND = "NOT FOUND"


def register_local_job(job: Any) -> None:
    _LOCAL_JOBS[job.job_id()] = job


def forget_local_jobs() -> None:
    """Drop every local job handle (what ending the submitting process does)."""
    _LOCAL_JOBS.clear()


def find_job(job_id: str, *, local: bool, service: Any = None) -> Any | None:
    """The job called ``job_id``, or ``None`` when it cannot be found."""
    if service is not None:
        try:
            return service.job(job_id)
        except Exception:  # noqa: BLE001 - RuntimeJobNotFound, IBMRuntimeError, ...
            return None
    if local:
        return _LOCAL_JOBS.get(job_id)
    return None


def job_state(job: Any) -> str:
    """``DONE``, ``ERROR``, ``CANCELLED``, ``RUNNING``, ``QUEUED``, … for real or local jobs."""
    # A local job (qiskit's PrimitiveJob) reports a future still waiting for its thread as
    # ERROR, and caches that: ask the future first.
    future = getattr(job, "_future", None)
    if future is not None and hasattr(future, "done") and not future.done():
        return "RUNNING"
    status = job.status()
    return str(getattr(status, "name", status)).upper()


def is_final(state: str) -> bool:
    return state in (DONE_STATE, ERROR_STATE, CANCELLED_STATE)


def error_message(job: Any) -> str:
    """The service's reason for a failed job ('' when it gives none)."""
    try:
        return str(job.error_message() or "")
    except Exception:  # noqa: BLE001
        return ""


def failure_reason(job: Any) -> str:
    """Why a job in the ERROR state failed: the service's message, else the raised error."""
    message = error_message(job)
    if message:
        return message
    try:
        job.result()
    except Exception as exc:  # noqa: BLE001 - the failure itself
        return f"{type(exc).__name__}: {exc}"
    return "job failed"


def recover_job_id(service: Any, tags: list[str]) -> str | None:
    """The id of a job carrying all ``tags`` (a submission whose id was never recorded)."""
    if service is None or not hasattr(service, "jobs"):
        return None
    try:
        found = service.jobs(job_tags=tags, limit=2)
    except Exception:  # noqa: BLE001
        return None
    return found[0].job_id() if len(found) == 1 else None


def usage_estimation(job: Any) -> Any:
    """The service's QPU-usage estimate of a submitted job (real jobs only)."""
    try:
        return job.usage_estimation
    except Exception:  # noqa: BLE001 - local jobs and older releases have none
        return None


def job_usage(job: Any) -> dict[str, Any]:
    """QPU usage and timestamps of a finished job, as far as it reports them."""
    usage: dict[str, Any] = {}
    for name in ("usage", "metrics"):
        try:
            usage[name] = getattr(job, name)()
        except Exception:  # noqa: BLE001
            continue
    return usage


def result_arrays(result: Any) -> dict[str, Any]:
    """Expectation values (and their standard errors) of every PUB, concatenated in order."""
    evs, stds, sems = [], [], []
    for pub in result:
        data = pub.data
        evs.append(np.asarray(data.evs, dtype=float))
        stds.append(np.asarray(data.stds, dtype=float) if "stds" in data else None)
        if "ensemble_standard_error" in data:
            sems.append(np.asarray(data.ensemble_standard_error, dtype=float))
    arrays: dict[str, Any] = {"evs": np.concatenate(evs, axis=0)}
    if all(s is not None for s in stds):
        arrays["stds"] = np.concatenate(stds, axis=0)
    if len(sems) == len(evs):
        arrays["ensemble_standard_error"] = np.concatenate(sems, axis=0)
    metadata = dict(getattr(result, "metadata", {}) or {})
    arrays["metadata"] = metadata
    arrays["pub_metadata"] = [dict(getattr(pub, "metadata", {}) or {}) for pub in result]
    return arrays
