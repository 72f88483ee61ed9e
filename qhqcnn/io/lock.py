"""Exclusive locks on a run directory or a job record, held by one process at a time.

The lock is an ``fcntl.flock`` on a small file (``.lock``) inside the directory. The kernel
releases it when the holding process ends, however it ends (``kill -9`` included), so a lock
file left behind is never *stale*: the next process simply takes the lock again. The file holds
the holder's pid, host, start time and command line, which the error of a second process names.

Locks are re-entrant within a process (``train`` holds the run's lock and the evaluation it
runs at the end takes it again), and a no-op on a non-zero ``torchrun`` rank (rank 0 alone
writes the run directory).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from qhqcnn.errors import LockedError
from qhqcnn.io.files import storage_error

LOCK_FILE = ".lock"

_HELD: dict[str, list[Any]] = {}  # resolved lock path -> [open handle, depth]
_GUARD = threading.Lock()


def _holder_record(what: str) -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([os.path.basename(sys.argv[0] or "python"), *sys.argv[1:]]),
        "what": what,
    }


def read_holder(directory: str | os.PathLike[str]) -> dict[str, Any] | None:
    """What the lock file of ``directory`` says about its last holder (``None``: nothing)."""
    try:
        data = json.loads((Path(directory) / LOCK_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def describe_holder(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "another process"
    return (
        f"process {holder.get('pid')} on {holder.get('host')} (since {holder.get('started')}: "
        f"{holder.get('command')})"
    )


def _is_secondary_rank() -> bool:
    try:
        return int(os.environ.get("RANK", "0")) > 0 and "WORLD_SIZE" in os.environ
    except ValueError:
        return False


@contextmanager
def exclusive_lock(directory: str | os.PathLike[str], what: str = "directory") -> Iterator[None]:
    """Hold the exclusive lock of ``directory`` (created if needed) for the ``with`` block.

    Raises :class:`~qhqcnn.errors.LockedError` at once, naming the holder, when another
    process holds it. ``what`` names the directory's kind in that message ("run", "job record").
    """
    import fcntl

    if _is_secondary_rank():
        yield
        return
    folder = Path(directory)
    path = folder / LOCK_FILE
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise storage_error(path, exc) from None
    key = str(path.resolve())
    with _GUARD:
        held = _HELD.get(key)
        if held is not None:
            held[1] += 1
    if held is not None:
        try:
            yield
        finally:
            with _GUARD:
                held[1] -= 1
        return
    try:
        handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - kept open while held
    except OSError as exc:
        raise storage_error(path, exc) from None
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        holder = describe_holder(read_holder(folder))
        raise LockedError(
            f"the {what} {folder} is in use by {holder}; wait for it to finish (or end it) "
            "and try again"
        ) from None
    except OSError as exc:
        handle.close()
        raise LockedError(f"cannot lock the {what} {folder}: {exc.strerror or exc}") from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(_holder_record(what)) + "\n")
        handle.flush()
    except OSError:
        pass  # the lock holds even when the note about its holder cannot be written
    with _GUARD:
        _HELD[key] = [handle, 1]
    try:
        yield
    finally:
        with _GUARD:
            _HELD.pop(key, None)
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        handle.close()


def is_locked(directory: str | os.PathLike[str]) -> bool:
    """Whether some process holds the lock of ``directory`` now (this one included).

    Read from ``/proc/locks`` without touching the lock, so asking never makes another
    process's attempt to take it fail; ``False`` where ``/proc/locks`` does not exist.
    """
    path = Path(directory) / LOCK_FILE
    try:
        inode = path.stat().st_ino
    except OSError:
        return False
    if str(path.resolve()) in _HELD:
        return True
    try:
        table = Path("/proc/locks").read_text()
    except OSError:
        return False
    for line in table.splitlines():
        fields = line.split()
        if "FLOCK" in fields and "->" not in fields:
            where = next((f for f in fields if f.count(":") == 2), "")
            if where.rsplit(":", 1)[-1] == str(inode):
                return True
    return False
