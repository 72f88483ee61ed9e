"""Shared engine settings (device, dtype, layout threshold) and their validation."""

from __future__ import annotations

from dataclasses import dataclass

import torch

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
    """How the engine simulates: torch ``device``/``dtype``, dense-layout threshold, caching."""

    device: torch.device
    dtype: torch.dtype
    dense_max_qubits: int = DEFAULT_DENSE_MAX_QUBITS
    cache_forward: bool = True

    @classmethod
    def create(
        cls,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = torch.complex128,
        dense_max_qubits: int = DEFAULT_DENSE_MAX_QUBITS,
        cache_forward: bool = True,
    ) -> EngineOptions:
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be complex128 or complex64, got {dtype!r}")
        return cls(torch.device(device), _DTYPES[dtype], int(dense_max_qubits), cache_forward)

    def simulator(self) -> StatevectorSimulator:
        """A simulator with these settings (sharing the process-wide forward-trace cache)."""
        return StatevectorSimulator(
            self.device,
            self.dtype,
            self.dense_max_qubits,
            trace_cache=GLOBAL_TRACE_CACHE if self.cache_forward else None,
        )
