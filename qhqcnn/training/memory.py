"""Memory guard: estimate what a configuration's quantum engine needs before allocating it.

A simulated register of ``n`` qubits costs ``2**n`` complex amplitudes (16 bytes each) per
state, a density matrix ``4**n``. The engines process parameter rows in chunks whose working set
stays within a budget, but one row can never be split: with its observables' bras and the
adjoint gradient's buffers, a row of the exact engine holds about ``(2·outputs + 1)·4`` states
plus two per circuit angle. Above the memory available the process would only grow until the
kernel's OOM killer ends it (and slows the whole machine on the way), so training and
evaluation refuse such a configuration up front with the estimate and the limit.

Override: ``TrainConfig(allow_large_memory=True)`` or the environment variable
``QHQCNN_ALLOW_LARGE_MEMORY=1``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qhqcnn.errors import ConfigError

ALLOW_ENV = "QHQCNN_ALLOW_LARGE_MEMORY"
#: The engines' cap on one chunk of rows (``engine.statevector.DEFAULT_MEMORY_BUDGET``).
CHUNK_BUDGET = 1 << 29
#: Rows of one evaluation batch (``score_split``'s default batch size).
EVAL_BATCH = 256
COMPLEX = 16  # bytes of one complex128 amplitude


@dataclass(frozen=True)
class MemoryEstimate:
    """The estimated peak of the quantum engine (``nbytes``) and how it was reached."""

    nbytes: int
    detail: str


def format_bytes(nbytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(nbytes) < 1024 or unit == "PiB":
            return f"{nbytes:.1f} {unit}" if unit != "B" else f"{int(nbytes)} B"
        nbytes /= 1024
    return f"{nbytes:.1f} PiB"


def estimate_memory(
    config: Any, backend: str | None = None, options: dict[str, Any] | None = None
) -> MemoryEstimate:
    """The quantum engine's working memory for ``config`` on ``backend`` (default its own).

    Classical models need none (0). The estimate is a lower bound of the engine's peak: the
    per-row working set, or the chunk budget when many rows fit in it.
    """
    spec = config.model
    if not spec.is_quantum:
        return MemoryEstimate(0, "classical model: no quantum engine")
    template = spec.template()
    n = int(template.num_qubits)
    outputs = int(template.num_outputs)
    angles = int(template.num_inputs) + int(template.num_weights)
    name = backend or config.backend
    if options is None:
        options = config.backend_options if backend is None else {}
    noisy = name == "aer" and options.get("noise") not in (None, "ideal")
    if noisy:
        state, kind = COMPLEX << (2 * n), f"density matrix of {n} qubits"
    else:
        state, kind = COMPLEX << n, f"statevector of {n} qubits"
    per_row = state * ((outputs + 1) * 4 + 2 * angles)
    rows = max(int(config.batch_size), EVAL_BATCH)
    total = max(per_row, min(rows * per_row, CHUNK_BUDGET))
    states = (outputs + 1) * 4 + 2 * angles
    detail = (
        f"backend {name}: one {kind} is {format_bytes(state)}, and each row holds about "
        f"{states} of them ({outputs} outputs, {angles} angles)"
    )
    return MemoryEstimate(int(total), detail)


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().split()[0]
    except (OSError, IndexError):
        return None
    return int(text) if text.isdigit() else None


def available_memory() -> int | None:
    """Bytes this process may still allocate: ``MemAvailable`` and the cgroup's limit (the
    smaller); ``None`` when neither is known."""
    limits = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                limits.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    limit, used = _read_int("/sys/fs/cgroup/memory.max"), _read_int("/sys/fs/cgroup/memory.current")
    if limit is not None and used is not None:
        limits.append(max(limit - used, 0))
    return min(limits) if limits else None


def check_memory(
    config: Any, info: Any = None, backend: Any = None, options: dict[str, Any] | None = None
) -> MemoryEstimate:
    """Raise :class:`~qhqcnn.errors.ConfigError` when ``config`` needs more memory than is
    available, with the estimate and the limit (``allow_large_memory`` or
    ``$QHQCNN_ALLOW_LARGE_MEMORY=1`` skip the refusal).

    ``backend``: a backend name or instance to run on instead of the config's own (its
    ``options()`` decide between a statevector and a density matrix)."""
    if backend is not None and not isinstance(backend, str):
        if options is None and hasattr(backend, "options"):
            try:
                options = dict(backend.options())
            except Exception:  # noqa: BLE001 - a user backend's options are only a hint here
                options = None
        backend = getattr(backend, "name", None)
    estimate = estimate_memory(config, backend, options)
    allowed = getattr(config, "allow_large_memory", False) or os.environ.get(ALLOW_ENV, "") in (
        "1",
        "true",
        "yes",
    )
    if estimate.nbytes == 0 or allowed:
        return estimate
    limit = available_memory()
    if limit is not None and estimate.nbytes > limit:
        raise ConfigError(
            f"this configuration needs about {format_bytes(estimate.nbytes)} of memory "
            f"({estimate.detail}) but only {format_bytes(limit)} is available; use fewer "
            f"qubits, or set allow_large_memory (environment {ALLOW_ENV}=1) to try anyway"
        )
    return estimate
