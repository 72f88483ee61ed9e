"""A tiny cache of the last forward simulations, so a gradient right after a forward pass with
the same parameter rows (what ``TorchConnector`` does) does not simulate the circuit again."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from .tensors import GateTensors


@dataclass(frozen=True, eq=False)
class ForwardTrace:
    """Gate tensors, gate blocks and final states ``(R, D)`` of a batch (and, when kept, the
    state after every block, for the adjoint sweep)."""

    rows: np.ndarray
    tensors: GateTensors
    psi: torch.Tensor
    blocks: tuple
    states: tuple | None = None


class TraceCache:
    """Least-recently-used traces keyed by (prepared program, device, dtype) and exact rows."""

    def __init__(self, maxsize: int = 4) -> None:
        self._entries: OrderedDict[tuple, ForwardTrace] = OrderedDict()
        self._maxsize = maxsize
        self._lock = threading.Lock()

    def lookup(self, key: tuple, rows: np.ndarray) -> ForwardTrace | None:
        """The stored trace for ``key`` if it was computed for exactly these ``rows``."""
        with self._lock:
            trace = self._entries.get(key)
            if trace is None:
                return None
            if trace.rows.shape != rows.shape or not np.array_equal(trace.rows, rows):
                return None
            self._entries.move_to_end(key)
            return trace

    def store(self, key: tuple, trace: ForwardTrace) -> None:
        """Remember ``trace`` (its rows are copied so later edits cannot alias)."""
        trace = ForwardTrace(
            np.array(trace.rows, copy=True), trace.tensors, trace.psi, trace.blocks, trace.states
        )
        with self._lock:
            self._entries[key] = trace
            self._entries.move_to_end(key)
            while len(self._entries) > self._maxsize:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


#: Shared by every engine object in the process (estimator and gradient are separate objects).
GLOBAL_TRACE_CACHE = TraceCache()
