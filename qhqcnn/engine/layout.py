"""Batched application of few-qubit gate matrices to states of shape ``(B, C, 2**n)``.

A gate is applied in its :class:`ApplySpace`, chosen so that one matrix product on a *view* of
the state does the work (no transposition of the state in memory):

* ``low``: the gate's qubits are all below ``LOW_BLOCK_QUBITS``; its matrix is embedded in the
  block of the lowest qubits and applied as ``state.view(-1, 2**w) @ M^T``;
* ``span``: its qubits lie in a short contiguous range ``low..low+w-1``; the embedded matrix
  multiplies the middle axis of ``state.view(A, 2**w, 2**low)``;
* ``permute``: otherwise the qubit axes are moved last, multiplied, and moved back.

Matrices are shared ``(m, m)`` or per batch row ``(B, m, m)``; ``m = 2**width`` of the space.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

#: Gates on qubits below this are applied as one GEMM on a (rows, 2**w) view.
LOW_BLOCK_QUBITS = 4
#: Longest contiguous qubit range a gate matrix is widened to.
SPAN_QUBITS = 4
#: Gates on a range that starts too low for ``span`` use a low block up to this width.
WIDE_LOW_BLOCK_QUBITS = 6


@dataclass(frozen=True)
class ApplySpace:
    """Where a gate acts: ``kind``, the space's ``width``/``low`` qubit and the positions of the
    gate's own qubits (in gate order) inside the space."""

    kind: str
    width: int
    low: int
    positions: tuple[int, ...]
    qubits: tuple[int, ...]


@lru_cache(maxsize=64)
def full_space(num_qubits: int) -> ApplySpace:
    """The whole register as one block (matrices ``2**n x 2**n``)."""
    qubits = tuple(range(num_qubits))
    return ApplySpace("low", num_qubits, 0, qubits, qubits)


@lru_cache(maxsize=8192)
def apply_space(qubits: tuple[int, ...], num_qubits: int) -> ApplySpace:
    """The cheapest way to apply a gate on ``qubits`` of an ``num_qubits`` register."""
    top, bottom = max(qubits) + 1, min(qubits)
    if top <= LOW_BLOCK_QUBITS:
        return ApplySpace("low", top, 0, qubits, qubits)
    if top - bottom <= SPAN_QUBITS and (bottom >= top - bottom or top > WIDE_LOW_BLOCK_QUBITS):
        return ApplySpace("span", top - bottom, bottom, tuple(q - bottom for q in qubits), qubits)
    if top <= WIDE_LOW_BLOCK_QUBITS:
        return ApplySpace("low", top, 0, qubits, qubits)
    return ApplySpace("permute", len(qubits), 0, tuple(range(len(qubits))), qubits)


@lru_cache(maxsize=8192)
def _axes(num_qubits: int, qubits: tuple[int, ...], lead: int) -> tuple[list[int], list[int]]:
    """Source axes of ``qubits`` (most significant first) and their destination (last) axes."""
    k = len(qubits)
    src = [lead + num_qubits - 1 - q for q in reversed(qubits)]
    dst = list(range(lead + num_qubits - k, lead + num_qubits))
    return src, dst


def apply_local(
    state: torch.Tensor,
    matrix: torch.Tensor,
    space: ApplySpace,
    num_qubits: int,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``state (B, C, D)`` times a gate matrix ``(m, m)`` or ``(B, m, m)`` in ``space``
    (``out``: a contiguous ``(B, C, D)`` tensor for the result, ``low`` spaces only)."""
    batch, cols, dim = state.shape
    per_row = matrix.dim() == 3
    m = 1 << space.width
    if space.kind == "low":
        flat = state.reshape(batch, -1, m)
        target = None if out is None else out.view(batch, -1, m)
        if per_row:
            result = torch.bmm(flat, matrix.transpose(1, 2), out=target)
        else:
            result = torch.matmul(flat, matrix.T, out=target)
        return result.view(batch, cols, dim)
    if space.kind == "span":
        view = state.reshape(batch, -1, m, 1 << space.low)
        if per_row:
            return (matrix[:, None] @ view).view(batch, cols, dim)
        if m > 1 << space.low:  # broadcasting would copy the matrix more than the state
            return (matrix @ view).reshape(batch, cols, dim)
        flat = view.reshape(-1, m, 1 << space.low)  # one small GEMM per block of rows
        return torch.bmm(matrix.expand(flat.shape[0], m, m), flat).view(batch, cols, dim)
    src, dst = _axes(num_qubits, space.qubits, 2)
    moved = state.reshape((batch, cols) + (2,) * num_qubits).movedim(src, dst)
    moved_shape = moved.shape
    flat = moved.reshape(batch, -1, m)
    out = torch.bmm(flat, matrix.transpose(1, 2)) if per_row else flat @ matrix.T
    return out.reshape(moved_shape).movedim(dst, src).reshape(batch, cols, dim)


def apply_generators_local(
    ket: torch.Tensor, generators: torch.Tensor, space: ApplySpace, num_qubits: int
) -> torch.Tensor:
    """``ket (B, D)`` times each of ``generators (S, m, m)`` or ``(B, S, m, m)``: ``(B, S, D)``."""
    batch, dim = ket.shape
    m = 1 << space.width
    slots = generators.shape[-3]
    if space.kind == "low":
        if generators.dim() == 3:  # shared: one GEMM against all generators side by side
            wide = generators.permute(2, 0, 1).reshape(m, slots * m)  # [b, (s, a)] = G_s[a, b]
            out = (ket.reshape(-1, m) @ wide).view(batch, dim // m, slots, m)
            return out.transpose(1, 2).reshape(batch, slots, dim)
        out = ket.reshape(batch, 1, -1, m) @ generators.transpose(-1, -2)  # (B, S, X, m)
        return out.reshape(batch, slots, dim)
    if space.kind == "span":
        low = 1 << space.low
        if generators.dim() == 3:  # shared: all generators stacked, one small GEMM per block
            flat = ket.reshape(-1, m, low)
            tall = generators.reshape(slots * m, m).expand(flat.shape[0], slots * m, m)
            out = torch.bmm(tall, flat).view(batch, dim // (m * low), slots, m * low)
            return out.transpose(1, 2).reshape(batch, slots, dim)
        view = ket.reshape(batch, 1, -1, m, low)
        return (generators[..., None, :, :] @ view).reshape(batch, slots, dim)
    src, dst = _axes(num_qubits, space.qubits, 1)
    moved = ket.reshape((batch,) + (2,) * num_qubits).movedim(src, dst)
    moved_shape = moved.shape
    out = moved.reshape(batch, 1, -1, m) @ generators.transpose(-1, -2)  # (B, S, rest, m)
    src2, dst2 = _axes(num_qubits, space.qubits, 2)
    out = out.reshape((batch, slots) + moved_shape[1:]).movedim(dst2, src2)
    return out.reshape(batch, slots, dim)
