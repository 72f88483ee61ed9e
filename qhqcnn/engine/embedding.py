"""Index arithmetic for placing a k-qubit matrix inside a larger qubit space (little-endian)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=4096)
def embedding_indices(
    local_qubits: tuple[int, ...], num_qubits: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(flat_index, mask)`` with ``full = local.reshape(d*d)[flat_index] * mask``.

    ``local_qubits[i]`` is the position (in the ``num_qubits`` space) of bit ``i`` of the local
    matrix index; both arrays have shape ``(2**num_qubits, 2**num_qubits)``.
    """
    dim = 1 << num_qubits
    rows = np.arange(dim)
    local = np.zeros(dim, dtype=np.int64)
    target_mask = 0
    for bit, qubit in enumerate(local_qubits):
        local |= ((rows >> qubit) & 1) << bit
        target_mask |= 1 << qubit
    d = 1 << len(local_qubits)
    flat = local[:, None] * d + local[None, :]
    mask = ((rows[:, None] ^ rows[None, :]) & ~target_mask) == 0
    flat.setflags(write=False)
    mask.setflags(write=False)
    return flat, mask
