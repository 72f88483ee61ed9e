"""Batched inner products between conjugated bras and kets (real part via a real GEMM)."""

from __future__ import annotations

import numpy as np
import torch


def contract(conj_bras: torch.Tensor, kets: torch.Tensor, real_only: bool) -> torch.Tensor:
    """``out[b, m, s] = sum_d conj_bras[b, m, d] * kets[b, s, d]`` (only its real part if asked).

    ``conj_bras`` is ``(B, M, D)``, ``kets`` is ``(B, S, D)`` (broadcast over ``B`` allowed).
    """
    if kets.shape[0] != conj_bras.shape[0]:
        kets = kets.expand(conj_bras.shape[0], -1, -1)
    if not real_only:
        return torch.bmm(conj_bras, kets.transpose(1, 2))
    # Re(x y) = Re x Re y - Im x Im y: a real dot product of [Re x, Im x] and [Re y, -Im y].
    left = torch.view_as_real(conj_bras.resolve_conj()).flatten(-2)
    right = torch.view_as_real(kets.conj().resolve_conj()).flatten(-2)
    return torch.bmm(left, right.transpose(1, 2))


def inner(bras: torch.Tensor, psi: torch.Tensor) -> torch.Tensor:
    """``<psi_r | bra_{r,m}>`` for bras ``(R, M, D)`` and states ``(R, D)``: ``(R, M)``."""
    return torch.bmm(bras, psi.conj()[:, :, None]).squeeze(-1)


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A CPU NumPy copy (resolving lazy conjugation)."""
    return tensor.resolve_conj().cpu().numpy()


def row_slice(tensor: torch.Tensor, start: int, stop: int, batched_dims: int = 3) -> torch.Tensor:
    """Rows ``start:stop`` of a per-row tensor (one with ``batched_dims`` or more dimensions)."""
    return tensor[start:stop] if tensor.dim() >= batched_dims else tensor


def rows_of(state: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Rows ``start:stop`` of a state ``(1 or R, ...)``; a single shared row is broadcast."""
    if state.shape[0] == 1:
        return state.expand((stop - start,) + tuple(state.shape[1:]))
    return state[start:stop]
