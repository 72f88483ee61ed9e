"""Atomic file writes and run metadata: nothing half-written is ever left behind."""

from __future__ import annotations

import errno
import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

CACHE_ENV = "QHQCNN_CACHE_DIR"

TRACKED_PACKAGES = (
    "qhqcnn",
    "qiskit",
    "qiskit-machine-learning",
    "qiskit-aer",
    "qiskit-ibm-runtime",
    "torch",
    "numpy",
    "medmnist",
    "scikit-learn",
)


def default_cache_dir() -> Path:
    """``$QHQCNN_CACHE_DIR`` if set, else ``~/.cache/qhqcnn`` (feature and array caches)."""
    from_env = os.environ.get(CACHE_ENV)
    return Path(from_env).expanduser() if from_env else Path.home() / ".cache" / "qhqcnn"


#: errno values that mean "this file cannot be written here", reported as a StorageError.
STORAGE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}
)


def storage_error(path: str | os.PathLike, exc: OSError):
    """The :class:`~qhqcnn.errors.StorageError` saying why ``path`` could not be written."""
    from qhqcnn.errors import StorageError

    reason = exc.strerror or os.strerror(exc.errno) if exc.errno else str(exc)
    hint = (
        " (free some space and run the command again)"
        if exc.errno
        in (
            errno.ENOSPC,
            errno.EDQUOT,
        )
        else ""
    )
    return StorageError(f"cannot write {path}: {reason}{hint}; the previous version is kept")


def atomic_write(
    path: str | os.PathLike,
    write: Callable[[Path], None],
    *,
    before_replace: Callable[[Path], None] | None = None,
) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, fsync it, then rename over ``path``.

    A crash at any point leaves either the old file or the new one, never a partial file; the
    temporary file is removed on any error. A full disk (or another storage failure) raises a
    :class:`~qhqcnn.errors.StorageError`. ``before_replace(tmp)`` runs just before the rename
    (e.g. to record the new content's hash).
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
    except OSError as exc:
        if exc.errno in STORAGE_ERRNOS:
            raise storage_error(target, exc) from exc
        raise
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual file mode
        if before_replace is not None:
            before_replace(tmp)
        os.replace(tmp, target)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        storage = _storage_cause(exc)
        if storage is not None:
            raise storage_error(target, storage) from exc
        raise
    return target


def _storage_cause(exc: BaseException) -> OSError | None:
    """The storage OSError behind ``exc`` (torch wraps write failures in RuntimeError)."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return None
        if isinstance(seen, OSError) and seen.errno in STORAGE_ERRNOS:
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def remove_stale_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Delete the temporary files (``.NAME.*.tmp``) a killed writer left in ``directory``.

    Only call this while holding the directory's lock: no other writer can be mid-write then.
    """
    removed = []
    folder = Path(directory)
    if not folder.is_dir():
        return removed
    for tmp in folder.glob(".*.tmp"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | os.PathLike, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def torch_bytes(obj: Any) -> bytes:
    """``torch.save(obj)`` as bytes (serialised in memory, so a write error keeps its errno)."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> Path:
    data = torch_bytes(obj)
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that decide a result."""
    versions = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    versions["python"] = platform.python_version()
    return versions


def git_commit(cwd: str | os.PathLike | None = None) -> str | None:
    """The commit of the source tree the package runs from (``None`` outside a git checkout)."""
    where = Path(cwd) if cwd else Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=where,
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout.strip()
    return out.stdout.strip() + ("-dirty" if dirty else "")


def environment_record() -> dict[str, Any]:
    """Package versions, git commit and machine, saved with every result."""
    return {
        "packages": package_versions(),
        "git_commit": git_commit(),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
        },
    }


def atomic_save_npz(path: str | os.PathLike, **arrays: Any) -> Path:
    """``np.savez`` to ``path`` atomically (the name is kept exactly as given)."""
    import numpy as np

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)

    return atomic_write(path, write)
