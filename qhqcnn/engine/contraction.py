"""Batched contractions of bras and kets (the real part through a real GEMM) and small helpers."""

from __future__ import annotations

import numpy as np
import torch


def contract(left: torch.Tensor, right: torch.Tensor, real_only: bool) -> torch.Tensor:
    """``out[b, m, s] = sum_d left[b, m, d] * right[b, s, d]`` (only its real part if asked).

    ``left`` is ``(B, M, D)``, ``right`` is ``(B, S, D)`` (broadcast over ``B`` allowed).
    """
    if right.shape[0] != left.shape[0]:
        right = right.expand(left.shape[0], -1, -1)
    if not real_only:
        return torch.bmm(left, right.transpose(1, 2))
    # Re(x y) = Re x Re y - Im x Im y: a real dot product of [Re x, Im x] and [Re y, -Im y].
    real_left = torch.view_as_real(left.resolve_conj()).flatten(-2)
    real_right = torch.view_as_real(right.conj().resolve_conj()).flatten(-2)
    return torch.bmm(real_left, real_right.transpose(1, 2))


def inner(bras: torch.Tensor, psi: torch.Tensor) -> torch.Tensor:
    """``<psi_r | bra_{r,m}>`` for bras ``(R, M, D)`` and states ``(R, D)``: ``(R, M)``."""
    return torch.bmm(bras, psi.conj()[:, :, None]).squeeze(-1)


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A CPU NumPy copy (resolving lazy conjugation)."""
    return tensor.resolve_conj().cpu().numpy()


def row_slice(tensor: torch.Tensor, start: int, stop: int, batched_dims: int = 3) -> torch.Tensor:
    """Rows ``start:stop`` of a per-row tensor (one with ``batched_dims`` or more dimensions)."""
    return tensor[start:stop] if tensor.dim() >= batched_dims else tensor
