"""Shared engine settings (device, dtype, layout threshold) and their validation."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .small import DEFAULT_SMALL_MAX_QUBITS
from .statevector import DEFAULT_DENSE_MAX_QUBITS, StatevectorSimulator
from .trace_cache import GLOBAL_TRACE_CACHE

_DTYPES = {
    "complex128": torch.complex128,
    "complex64": torch.complex64,
    torch.complex128: torch.complex128,
    torch.complex64: torch.complex64,
}


@dataclass(frozen=True)
class EngineOptions:
    """How the engine simulates: torch ``device``/``dtype``, dense-layout and segment-path
    thresholds, caching."""

    device: torch.device
    dtype: torch.dtype
    dense_max_qubits: int = DEFAULT_DENSE_MAX_QUBITS
    cache_forward: bool = True
    small_max_qubits: int = DEFAULT_SMALL_MAX_QUBITS

    @classmethod
    def create(
        cls,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = torch.complex128,
        dense_max_qubits: int = DEFAULT_DENSE_MAX_QUBITS,
        cache_forward: bool = True,
        small_max_qubits: int = DEFAULT_SMALL_MAX_QUBITS,
    ) -> EngineOptions:
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be complex128 or complex64, got {dtype!r}")
        return cls(
            torch.device(device),
            _DTYPES[dtype],
            int(dense_max_qubits),
            cache_forward,
            int(small_max_qubits),
        )

    def simulator(self) -> StatevectorSimulator:
        """A simulator with these settings (sharing the process-wide forward-trace cache)."""
        return StatevectorSimulator(
            self.device,
            self.dtype,
            self.dense_max_qubits,
            trace_cache=GLOBAL_TRACE_CACHE if self.cache_forward else None,
            small_max_qubits=self.small_max_qubits,
        )
