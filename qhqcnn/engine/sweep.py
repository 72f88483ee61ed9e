"""Forward simulation and adjoint gradients over *blocks* of gates.

Two block plans exist. The *dense* layout (few qubits) and the *gatewise* local layout (the
previous many-qubit path, kept as a reference: ``StatevectorSimulator(fusion=False)``) group
consecutive shared gates; the *fused* local layout (the default for many qubits, see
:func:`_fused_plan`) lets a gate join any recent block it commutes past, per-row gates included,
so that a layer of single-qubit gates and the entanglers after it become a few 5-qubit blocks,
each applied as one GEMM on a view of the state; its gradient terms come from the block's
``m x m`` transition matrices (:func:`_transitions`) instead of generator images of the state.

Consecutive shared gates (same matrix on every row) are grouped into blocks whose qubit support
fits one small matrix (the whole register in the dense layout, up to :data:`BLOCK_QUBITS` qubits
otherwise); a per-row gate is a block of its own. The forward pass applies each block's product
once. For gradients, with ``G_{J-1} ... G_0`` a block and ``Q_j = G_{J-1} ... G_j`` its suffix
products, the derivative with respect to angle ``s`` of gate ``j`` is

    ``2 Re <lambda| Q_j Gen_s Q_j^dagger |phi>``,   ``Gen_s = G_j^dagger dG_j/da_s``,

where ``|phi>`` is the state and ``<lambda| = <psi| O (later gates)`` the bra *after* the block. So
one backward sweep carries ``[phi; lambda_1..lambda_M]`` (one bra per observable) back through
each block with a single product, and all terms of a block come from one batched application of
the conjugated generators and one contraction.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from .contraction import contract, row_slice
from .embedding import embedding_indices
from .layout import (
    ApplySpace,
    apply_generators_local,
    apply_local,
    apply_space,
    full_space,
)
from .tensors import GateTensors, PreparedProgram, embed

#: Largest qubit support of a block of shared gates in the local (many-qubit) layout.
BLOCK_QUBITS = 4


#: Largest qubit support of a fused block of shared gates (fused local layout).
FUSED_BLOCK_QUBITS = 5
#: Largest support of a fused block of per-row gates (their products are formed per row).
FUSED_PER_ROW_QUBITS = 3
#: Narrowest fused block of shared gates (narrower ones are widened with identities).
FUSED_MIN_QUBITS = 4
#: Whether leading per-row blocks on disjoint qubits are applied as one product state
#: (:func:`_product_prefix`); ``False`` applies them block by block (the reference path).
PRODUCT_PREFIX = True
#: Whether gates are sunk into later blocks that hold their qubits (:func:`_sink`).
SINK = True
#: Whether blocks on a cyclic window of qubits use rotated layouts (:func:`_fused_space`).
ROTATE = True
#: Widest block of the leading single-qubit per-row gates (see :func:`_split_leading`; ``0``:
#: leave them as planned).
PREFIX_FACTOR_QUBITS = 2
#: Whether the row-summed terms of all blocks are formed together after the sweep
#: (:func:`_batched_summed_terms`); ``False``: block by block (:func:`_summed_terms`).
BATCHED_SUMMED_TERMS = True
#: Whether the fused blocks are built with one embedding per gate kind and the products of
#: runs of fixed gates cached (:func:`_build_fused`); ``False``: block by block.
BATCHED_BUILD = True
#: How many of the latest blocks a gate may join.
FUSION_LOOKBACK = 12


@dataclass(frozen=True, eq=False)
class Block:
    """Gates ``ops`` (in circuit order) applied as one matrix in ``space``."""

    ops: tuple[int, ...]
    space: ApplySpace
    per_row: bool
    matrix: torch.Tensor  # (m, m) product, or (R, m, m) for a per-row gate
    suffixes: tuple[torch.Tensor, ...] = ()  # Q_j for j = 0..J-1 (shared and fused blocks)
    layout: tuple[int, ...] | None = None  # fused blocks: qubit at each bit of the state


def _fused_space(
    support: tuple[int, ...], n: int, min_width: int = 1
) -> tuple[ApplySpace, tuple[int, ...]]:
    """A fused block acts on the lowest bits of its own qubit *layout*: its qubits first, then
    the others; the state is permuted into that layout (one copy, skipped when the previous
    block used the same layout) and the block is one GEMM on a ``(rows, 2**k)`` view.

    When the support is a window of consecutive qubits in cyclic order (``q, q+1, ... mod n``:
    a layer's entanglers along a ring or a line), the layout is the register rotated to start
    at ``q``: between two rotations the permutation is a transpose of a ``(rows, 2**a, 2**b)``
    view, a cheap copy, where a general permutation of ``n`` axes of size 2 costs several
    times more. Otherwise: the qubits ascending, then the others.

    A block narrower than ``min_width`` is widened (identity on the extra qubits, the next ones
    of the layout): a GEMM with 2 or 4 columns is slower than one with 16 (BLAS kernels)."""
    k = len(support)
    chosen = set(support)
    for start in support if ROTATE else ():
        window = tuple((start + j) % n for j in range(k))
        if set(window) == chosen:
            layout = window + tuple((start + k + j) % n for j in range(n - k))
            break
    else:
        layout = support + tuple(q for q in range(n) if q not in support)
    k = max(k, min(min_width, n))
    return ApplySpace("low", k, 0, tuple(range(k)), layout[:k]), layout


@lru_cache(maxsize=8192)
def _relayout_axes(src: tuple[int, ...], dst: tuple[int, ...], lead: int) -> tuple[int, ...]:
    n = len(src)
    where = {q: p for p, q in enumerate(src)}
    return tuple(range(lead)) + tuple(lead + n - 1 - where[dst[n - 1 - j]] for j in range(n))


def relayout(
    tensor: torch.Tensor, src: tuple[int, ...], dst: tuple[int, ...], out=None
) -> torch.Tensor:
    """``tensor (..., 2**n)``, qubit ``src[p]`` at bit ``p`` -> qubit ``dst[p]`` at bit ``p``
    (into ``out``, a contiguous tensor of the same shape, when given)."""
    if src == dst:
        return tensor
    shape = tensor.shape
    axes = _relayout_axes(src, dst, len(shape) - 1)
    moved = tensor.reshape(shape[:-1] + (2,) * len(src)).permute(axes)
    if out is None:
        return moved.reshape(shape)
    out.view(moved.shape).copy_(moved)
    return out


class StatePool:
    """State-sized tensors kept for reuse across steps (by shape), up to ``limit`` bytes: a
    step that allocates its states afresh pays a page fault per 4 KiB of them every time."""

    def __init__(self, dtype: torch.dtype, device, limit: int) -> None:
        self.dtype, self.device, self.limit = dtype, device, limit
        self._free: dict[tuple[int, ...], list[torch.Tensor]] = {}
        self._held = 0

    def take(self, shape) -> torch.Tensor:
        """A contiguous tensor of ``shape`` (contents undefined)."""
        free = self._free.get(tuple(shape))
        if free:
            tensor = free.pop()
            self._held -= tensor.numel() * tensor.element_size()
            return tensor
        return torch.empty(tuple(shape), dtype=self.dtype, device=self.device)

    __call__ = take  # a pool is an ``allocate`` for :func:`forward` (which also gives back)

    def give(self, *tensors: torch.Tensor) -> None:
        """Hand tensors back (the caller no longer reads them)."""
        for tensor in tensors:
            size = tensor.numel() * tensor.element_size()
            if self._held + size > self.limit:
                return
            self._free.setdefault(tuple(tensor.shape), []).append(tensor)
            self._held += size


def _fused_plan(prepared: PreparedProgram, tensors: GateTensors):
    """``[(ops, per_row, space)]`` with gates fused across the gates of other qubits.

    A gate may join block ``b`` when no later block touches its qubits (so it commutes with
    them), ``b`` holds the same kind of gate (shared or per-row), and the merged support stays
    within the block size; a block on a contiguous window of qubits stays one. Among the allowed
    blocks the gate joins the one it widens least (the latest on ties), else opens a new block.
    """
    key = ("fused", tuple(sorted(tensors.per_row)))
    plan = prepared.memo.get(key)
    if plan is not None:
        return plan
    n = prepared.program.num_qubits
    blocks: list[list] = []  # [ops, per_row, support, contiguous]
    last: dict[int, int] = {}
    for i, op in enumerate(prepared.ops):
        per_row = i in tensors.per_row
        limit = FUSED_PER_ROW_QUBITS if per_row else FUSED_BLOCK_QUBITS
        qubits = set(op.qubits)
        floor = max((last.get(q, -1) for q in op.qubits), default=-1)
        best, best_growth = None, None
        for b in range(len(blocks) - 1, max(floor, len(blocks) - FUSION_LOOKBACK, 0) - 1, -1):
            ops, kind, support, contiguous = blocks[b]
            if kind != per_row:
                continue
            merged = support | qubits
            if len(merged) > limit:
                continue
            if contiguous and max(merged) - min(merged) >= limit:
                continue
            growth = len(merged) - len(support)
            if best is None or growth < best_growth:
                best, best_growth = b, growth
                if growth == 0:
                    break
        if best is None:
            contiguous = max(qubits) - min(qubits) < limit
            blocks.append([[i], per_row, set(qubits), contiguous])
            best = len(blocks) - 1
        else:
            blocks[best][0].append(i)
            blocks[best][2] |= qubits
        for q in op.qubits:
            last[q] = best
    if SINK:
        blocks = _sink(prepared, blocks)
    if PREFIX_FACTOR_QUBITS:
        blocks = _split_leading(prepared, blocks)
    plan = [
        (
            tuple(ops),
            per_row,
            *_fused_space(tuple(sorted(support)), n, 1 if per_row else FUSED_MIN_QUBITS),
        )
        for ops, per_row, support, _ in blocks
    ]
    prepared.memo[key] = plan
    return plan


def _split_leading(prepared: PreparedProgram, blocks: list[list]) -> list[list]:
    """The leading per-row blocks, while they hold single-qubit gates only (an angle encoding),
    are regrouped by qubit into blocks of :data:`PREFIX_FACTOR_QUBITS` qubits (a tensor product
    regroups freely; the gates of one qubit keep their order): the product prefix then has more,
    smaller factors, whose per-row gradient terms cost ``m**2`` per gate and row (16, not 64)."""
    count = 0
    for ops, per_row, _, _ in blocks:
        if not per_row or any(len(prepared.ops[i].qubits) != 1 for i in ops):
            break
        count += 1
    if count == 0:
        return blocks
    by_qubit: dict[int, list[int]] = {}
    for ops, _, _, _ in blocks[:count]:
        for i in ops:
            by_qubit.setdefault(prepared.ops[i].qubits[0], []).append(i)
    qubits = sorted(by_qubit)
    out = []
    for first in range(0, len(qubits), PREFIX_FACTOR_QUBITS):
        part = qubits[first : first + PREFIX_FACTOR_QUBITS]
        out.append([[i for q in part for i in by_qubit[q]], True, set(part), True])
    return out + blocks[count:]


def _sink(prepared: PreparedProgram, blocks: list[list]) -> list[list]:
    """Move gates into a later block that already holds all their qubits, when no block in
    between (and no gate after them in their own block) touches those qubits, so that they
    commute past what they skip; blocks left empty are dropped (fewer passes over the state:
    a layer's single-qubit gates that opened blocks of their own join the entangler blocks
    after them). A gate joins the front of its new block, keeping the order of gates that act
    on common qubits."""
    ops_qubits = [set(op.qubits) for op in prepared.ops]
    for b in range(len(blocks) - 2, -1, -1):
        ops, per_row = blocks[b][0], blocks[b][1]
        stay: list[int] = []
        for i in reversed(ops):
            qubits = ops_qubits[i]
            target = None
            if not any(qubits & ops_qubits[j] for j in stay):
                target = next((c for c in range(b + 1, len(blocks)) if blocks[c][2] & qubits), None)
            if target is None or blocks[target][1] != per_row or not qubits <= blocks[target][2]:
                stay.append(i)
                continue
            blocks[target][0].insert(0, i)
        stay.reverse()
        blocks[b][0] = stay
        blocks[b][2] = set().union(*(ops_qubits[i] for i in stay))
    return [block for block in blocks if block[0]]


@lru_cache(maxsize=4096)
def _trace_matrices(
    position_lists: tuple[tuple[int, ...], ...], width: int, dtype: torch.dtype, device
) -> torch.Tensor:
    """``(G, m*m, d*d)`` 0/1 matrices of partial traces: ``X.flatten() @ P_g`` sums an
    ``m x m`` matrix over the block's qubits other than gate ``g``'s, so that
    ``sum_ab Gen_emb[a, b] X[a, b] = sum_xy Gen[x, y] (X @ P_g)[x, y]`` for a gate ``Gen`` placed
    at ``position_lists[g]`` (no embedded ``m x m`` generators)."""
    out = []
    for positions in position_lists:
        flat, mask = embedding_indices(positions, width)
        matrix = np.zeros((flat.size, (1 << len(positions)) ** 2))
        matrix[np.arange(flat.size), flat.ravel()] = mask.ravel()
        out.append(matrix)
    return torch.as_tensor(np.stack(out)).to(device, dtype)


def _embed_per_row(local: torch.Tensor, positions: tuple[int, ...], width: int) -> torch.Tensor:
    """A per-row ``(R, [A,] d, d)`` gate tensor placed in a ``width``-qubit space."""
    return embed(local.unsqueeze(-3), [positions], width).squeeze(-3)


def _fused_build_structure(prepared: PreparedProgram, tensors: GateTensors, plan):
    """Per plan (cached): the gates of every block grouped by (per-row, block width, gate
    width) for one embedding per group and step, and each block's items in circuit order:
    ``(k, group, index)`` for a parameterized gate, ``(k, None, product)`` for a run of fixed
    gates (their product, embedded once)."""
    key = ("fused-build", tuple(sorted(tensors.per_row)))
    hit = prepared.memo.get(key)
    if hit is not None:
        return hit
    groups: dict = {}
    items = []
    for ops, per_row, space, _ in plan:
        positions = _positions(prepared, ops, space)
        block_items: list = []
        run: list[int] = []

        def close(run=run, block_items=block_items, ops=ops, space=space) -> None:
            if run:
                fixed = _embed_stack(prepared, prepared.fixed, [ops[k] for k in run], space, False)
                product = fixed[-1]
                for matrix in reversed(fixed[:-1]):
                    product = product @ matrix
                block_items.append((run[0], None, product))
                run.clear()

        for k, i in enumerate(ops):
            if i in prepared.fixed:
                run.append(k)
                continue
            close()
            width = len(prepared.ops[i].qubits)
            members = groups.setdefault((per_row, space.width, width), [])
            block_items.append((k, (per_row, space.width, width), len(members)))
            members.append((i, positions[k]))
        close()
        items.append(block_items)
    hit = prepared.memo[key] = (groups, items)
    return hit


def _build_fused(prepared: PreparedProgram, tensors: GateTensors) -> tuple[Block, ...]:
    if not BATCHED_BUILD:
        return _build_fused_by_block(prepared, tensors)
    plan = _fused_plan(prepared, tensors)
    groups, items = _fused_build_structure(prepared, tensors, plan)
    embedded = {}
    for (per_row, width, _), members in groups.items():
        if per_row:  # (R, G, d, d) -> (R, G, m, m)
            local = torch.stack([tensors.per_row[i].matrix for i, _ in members], dim=1)
            embedded[per_row, width, _] = embed(local, [p for _, p in members], width).unbind(1)
        else:
            local = torch.stack([tensors.shared[i] for i, _ in members])
            embedded[per_row, width, _] = embed(local, [p for _, p in members], width).unbind(0)
    blocks = []
    for (ops, per_row, space, layout), block_items in zip(plan, items, strict=True):
        suffixes: list = [None] * len(ops)
        product = None
        for k, group, where in reversed(block_items):
            matrix = where if group is None else embedded[group][where]
            product = matrix if product is None else product @ matrix
            suffixes[k] = product
        blocks.append(Block(ops, space, per_row, product, tuple(suffixes), layout))
    return tuple(blocks)


def _build_fused_by_block(prepared: PreparedProgram, tensors: GateTensors) -> tuple[Block, ...]:
    blocks = []
    for ops, per_row, space, layout in _fused_plan(prepared, tensors):
        if per_row:
            positions = _positions(prepared, ops, space)
            matrices = [
                _embed_per_row(tensors.per_row[i].matrix, pos, space.width)
                for i, pos in zip(ops, positions, strict=True)
            ]
        else:
            matrices = _embed_in_block(prepared, tensors.shared, ops, space, False, prepared.fixed)
        suffixes = [matrices[-1]]
        for matrix in reversed(matrices[:-1]):
            suffixes.append(suffixes[-1] @ matrix)
        suffixes.reverse()
        blocks.append(Block(ops, space, per_row, suffixes[0], tuple(suffixes), layout))
    return tuple(blocks)


def _block_plan(prepared: PreparedProgram, tensors: GateTensors):
    """``[(ops, per_row, space)]``: shared runs split by support, per-row gates alone."""
    key = ("blocks", tuple(sorted(tensors.per_row)))
    plan = prepared.memo.get(key)
    if plan is not None:
        return plan
    n = prepared.program.num_qubits
    limit = n if prepared.dense else min(n, BLOCK_QUBITS)
    plan, run, support = [], [], set()

    def close() -> None:
        if run:
            space = full_space(n) if prepared.dense else apply_space(tuple(sorted(support)), n)
            plan.append((tuple(run), False, space))
            run.clear()
            support.clear()

    for i, op in enumerate(prepared.ops):
        if i in tensors.per_row:
            close()
            plan.append(((i,), True, None))
            continue
        if len(support | set(op.qubits)) > limit:
            close()
        run.append(i)
        support.update(op.qubits)
    close()
    prepared.memo[key] = plan
    return plan


def _positions(prepared: PreparedProgram, ops, space: ApplySpace) -> tuple[tuple[int, ...], ...]:
    """Where each gate's qubits sit in ``space`` (cached per program)."""
    cache = prepared.memo.get("positions")
    if cache is None:
        cache = prepared.memo["positions"] = {}  # one memo entry (the memo is size-bounded)
    key = (tuple(ops), space)
    hit = cache.get(key)
    if hit is None:
        where = dict(zip(space.qubits, space.positions, strict=True))
        hit = cache[key] = tuple(tuple(where[q] for q in prepared.ops[i].qubits) for i in ops)
    return hit


def _embed_stack(prepared, tensors_by_op: dict, ops, space: ApplySpace, angle_axis: bool):
    """Stack and embed the local matrices (``(d, d)`` or ``(A, d, d)``) of ``ops`` in ``space``."""
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for k, i in enumerate(ops):
        by_shape.setdefault(tuple(tensors_by_op[i].shape), []).append(k)
    positions = _positions(prepared, ops, space)
    out: list = [None] * len(ops)
    for members in by_shape.values():
        stacked = torch.stack([tensors_by_op[ops[k]] for k in members])  # (G, [A,] d, d)
        if angle_axis:
            stacked = stacked.movedim(1, 0)  # (A, G, d, d)
        placed = embed(stacked, [positions[k] for k in members], space.width)
        if angle_axis:
            placed = placed.movedim(0, 1)
        for k, item in zip(members, placed.unbind(0), strict=True):
            out[k] = item
    return out


def _embed_in_block(prepared, tensors_by_op: dict, ops, space, angle_axis: bool, constant: dict):
    """:func:`_embed_stack`, reusing the embeddings of ops whose tensors never change
    (those in ``constant``: fixed gates, angle-independent generators)."""
    fixed = tuple(i for i in ops if i in constant)
    key = ("embedded", angle_axis, fixed, space)
    cached = prepared.memo.get(key)
    if cached is None:
        cached = dict(
            zip(fixed, _embed_stack(prepared, constant, fixed, space, angle_axis), strict=True)
        )
        prepared.memo[key] = cached
    varying = [i for i in ops if i not in constant]
    fresh = dict(
        zip(varying, _embed_stack(prepared, tensors_by_op, varying, space, angle_axis), strict=True)
    )
    return [cached[i] if i in cached else fresh[i] for i in ops]


def build_blocks(prepared: PreparedProgram, tensors: GateTensors) -> tuple[Block, ...]:
    """The blocks of one batch, with their products (and suffix products)."""
    if prepared.fused:
        return _build_fused(prepared, tensors)
    blocks = []
    for ops, per_row, space in _block_plan(prepared, tensors):
        if per_row:  # its space depends on the batch size: take it from the gate, not the plan
            gate = tensors.per_row[ops[0]]
            blocks.append(Block(ops, gate.space, True, gate.matrix))
            continue
        matrices = _embed_in_block(prepared, tensors.shared, ops, space, False, prepared.fixed)
        suffixes = [matrices[-1]]
        for matrix in reversed(matrices[:-1]):
            suffixes.append(suffixes[-1] @ matrix)
        suffixes.reverse()
        blocks.append(Block(ops, space, False, suffixes[0], tuple(suffixes)))
    return tuple(blocks)


def _product_prefix(blocks: tuple[Block, ...]) -> int:
    """How many leading blocks are per-row fused blocks on pairwise disjoint qubits: applied to
    ``|0...0>`` they leave a product state ``v_0 (x) v_1 (x) ... (x) |0...0>`` with ``v_j`` the
    first column of block ``j``'s matrix (an angle encoding), built without a pass per block;
    their gradient terms come from contractions of the co-states with those factors."""
    seen: set[int] = set()
    count = 0
    for block in blocks if PRODUCT_PREFIX else ():
        qubits = set(block.space.qubits)
        if not block.per_row or block.layout is None or qubits & seen:
            break
        seen |= qubits
        count += 1
    return count


def _prefix_layout(blocks: tuple[Block, ...], count: int, n: int) -> tuple[int, ...]:
    """The product prefix's qubits block by block (lowest bits first), then the others."""
    used = tuple(q for block in blocks[:count] for q in block.space.qubits)
    return used + tuple(q for q in range(n) if q not in used)


def _product_state(blocks: tuple[Block, ...], count: int, num_rows: int, dim: int, allocate=None):
    """``(R, 1, D)``: the product state after the first ``count`` blocks, in their layout
    (written into ``allocate((R, 1, D))`` when given)."""
    factors = [block.matrix[..., 0] for block in blocks[:count]]
    if allocate is None or len(factors) < 2:
        vec = _kron(factors)  # (R, m_0 m_1 ...)
        if vec.shape[-1] == dim:
            return vec[:, None, :]
        state = vec.new_zeros((vec.shape[0], 1, dim))
        state[:, 0, : vec.shape[-1]] = vec
        return state
    low = _kron(factors[:-1])
    rows, top = low.shape[0], factors[-1].shape[-1]
    span = low.shape[-1] * top
    state = allocate((rows, 1, dim))
    if span < dim:
        state[:, 0, span:].zero_()
    target = state[:, 0, :span].unflatten(-1, (top, low.shape[-1]))
    torch.mul(factors[-1][:, :, None], low[:, None, :], out=target)  # the last kron step
    return state


def forward(
    prepared: PreparedProgram,
    blocks: tuple[Block, ...],
    num_rows: int,
    keep: bool = False,
    allocate=None,
):
    """Final states ``(R, D)`` of a batch; with ``keep``, also the state after every block
    (``(R, D)``, or ``(1, D)`` while all rows agree) for the adjoint sweep to reuse (``None``
    for the blocks of the product prefix but its last, :func:`_product_prefix`). ``allocate``
    (with ``keep``): ``allocate(shape)`` gives the tensors the kept states are written to (a
    caller's pool, reused across steps: fresh memory costs page faults on every step)."""
    n = prepared.program.num_qubits
    dim = 1 << n
    states = []
    natural = tuple(range(n))
    prefix = _product_prefix(blocks)
    # a pool (``allocate.give``): the relayouts write into scratch tensors taken from it
    release = getattr(allocate, "give", None) if keep else None
    scratch: dict[tuple[int, ...], torch.Tensor] = {}

    def spare(shape: tuple[int, ...]):
        if release is None:
            return None
        if shape not in scratch:
            scratch[shape] = allocate(shape)
        return scratch[shape]

    if prefix:
        state = _product_state(blocks, prefix, num_rows, dim, allocate if keep else None)
        layout = _prefix_layout(blocks, prefix, n)
        if keep:
            states.extend([None] * (prefix - 1) + [state[:, 0]])
    else:
        state = torch.zeros((1, 1, dim), dtype=prepared.dtype, device=prepared.device)
        state[0, 0, 0] = 1
        layout = blocks[0].layout if blocks and blocks[0].layout else natural  # |0...0> is in all
    for block in blocks[prefix:]:
        if block.per_row and state.shape[0] != num_rows:
            state = state.expand(num_rows, 1, dim)
        if block.layout is not None:
            state = relayout(state, layout, block.layout, spare(tuple(state.shape)))
            layout = block.layout
        out = None
        if keep and allocate is not None and block.space.kind == "low":
            rows = num_rows if block.per_row else state.shape[0]
            out = allocate((rows, 1, dim))
        state = apply_local(state, block.matrix, block.space, n, out)
        if keep:
            states.append(state[:, 0])
    state = relayout(state, layout, natural)
    if release is not None:
        release(*scratch.values())
    psi = state[:, 0].expand(num_rows, dim)
    return (psi, tuple(states)) if keep else psi


def _transitions(bras: torch.Tensor, ket: torch.Tensor, space: ApplySpace) -> torch.Tensor:
    """``T[r, k, a, b] = sum_x bra[r, k, a, x] conj(ket[r, b, x])`` for a block on the lowest
    bits (``a``, ``b``: the block's index; ``x``: the other qubits): ``(R, M, m, m)``. Computed
    as ``(ket^H bra)^T`` so that the conjugation is a BLAS flag, not a copy."""
    rows, width, dim = bras.shape
    m = 1 << space.width
    ket_h = ket.expand(rows, dim).reshape(rows, -1, m).mT.conj()  # (R, m, X)
    view = bras.view(rows, width, -1, m)
    out = [ket_h @ view[:, k] for k in range(width)]  # (R, m_b, m_a) each
    return torch.stack(out, dim=1).mT


def _fused_generators(prepared, tensors: GateTensors, block: Block, chosen, start, stop):
    """``Q_j Gen_s Q_j^dagger`` of the chosen gates: ``(S, m, m)`` or per row ``(R, S, m, m)``."""
    if not block.per_row:
        return _conjugated_generators(prepared, tensors, block, chosen)
    positions = _positions(prepared, block.ops, block.space)
    parts = []
    for k in chosen:
        gens = tensors.per_row[block.ops[k]].generators
        gens = row_slice(gens, start, stop, batched_dims=4)
        gens = _embed_per_row(gens, positions[k], block.space.width)
        left = block.suffixes[k][start:stop, None]  # (R, 1, m, m)
        parts.append(left @ gens @ left.conj().transpose(-1, -2))
    return torch.cat(parts, dim=-3)


def _summed_transitions(bras: torch.Tensor, ket: torch.Tensor, space: ApplySpace) -> torch.Tensor:
    """``T[k, a, b] = sum_{r, x} bra[r, k, a, x] conj(ket[r, b, x])``: :func:`_transitions`
    summed over the rows, one GEMM of ``(m, R X) @ (R X, m)`` per co-state: ``(M, m, m)``."""
    rows, width, dim = bras.shape
    m = 1 << space.width
    if ket.shape[0] != rows:  # one ket for all rows: sum the bras over the rows first
        bras = bras.sum(0, keepdim=True)
    ket_h = ket.reshape(-1, m).mT.conj()  # (m, R X)
    out = [ket_h @ bras[:, k].reshape(-1, m) for k in range(width)]  # (m_b, m_a) each
    return torch.stack(out).mT


def _fused_gradient_terms(
    prepared,
    tensors,
    blocks,
    states,
    psi,
    bras,
    needed,
    start,
    stop,
    real,
    summed=frozenset(),
    pool: StatePool | None = None,
):
    """Per-row terms ``(R, M, S)`` and slots; with ``summed`` (shared ops only), the terms of
    those ops summed over the rows ``(M, S')`` and their slots as well. ``pool``: the co-states
    are moved and multiplied between two of its tensors (handed back at the end)."""
    n = prepared.program.num_qubits
    has = [any(i in needed for i in block.ops) for block in blocks]
    first = has.index(True)
    prefix = _product_prefix(blocks)
    layout = tuple(range(n))
    ket = psi[:, None, :]
    terms, slots, sums, sum_slots, pending = [], [], [], [], []
    scratch = [pool.take(bras.shape), pool.take(bras.shape)] if pool is not None else None

    def spare(current: torch.Tensor):  # the scratch tensor that does not hold ``current``
        if scratch is None:
            return None
        return scratch[1] if current.data_ptr() == scratch[0].data_ptr() else scratch[0]

    for b in range(len(blocks) - 1, max(first, prefix) - 1, -1):
        block = blocks[b]
        bras = relayout(bras, layout, block.layout, spare(bras))
        if states is None:
            ket = relayout(ket, layout, block.layout)
        layout = block.layout
        chosen = [k for k, i in enumerate(block.ops) if i in needed]
        if chosen:
            after = ket[:, 0] if states is None else _rows(states[b], start, stop)
            in_sum = [not block.per_row and block.ops[k] in summed for k in chosen]
            summed_ks = [k for k, flag in zip(chosen, in_sum, strict=True) if flag]
            rest = [k for k, flag in zip(chosen, in_sum, strict=True) if not flag]
            if summed_ks:
                trans = _summed_transitions(bras, after, block.space)  # (M, m, m)
                if BATCHED_SUMMED_TERMS:
                    pending.append((block, summed_ks, trans))
                else:
                    term = _summed_terms(prepared, tensors, block, summed_ks, trans)
                    sums.append(term.real if real else term)
                    sum_slots.extend(s for k in summed_ks for s in prepared.ops[block.ops[k]].slots)
            if rest:
                gens = _fused_generators(prepared, tensors, block, rest, start, stop)
                trans = _transitions(bras, after, block.space)  # (R, M, m, m)
                flat = trans.flatten(-2)
                if gens.dim() == 3:  # shared: sum_ab conj(C_s[a, b]) T[a, b], one GEMM
                    term = flat @ gens.conj().flatten(-2).T
                else:
                    term = torch.einsum("rkx,rsx->rks", flat, gens.conj().flatten(-2))
                term = term.conj()
                terms.append(term.real if real else term)
                slots.extend(s for k in rest for s in prepared.ops[block.ops[k]].slots)
        if b > first:
            matrix = row_slice(block.matrix, start, stop)
            adjoint = matrix.conj().transpose(-1, -2)
            bras = apply_local(bras, adjoint, block.space, n, spare(bras))
            if states is None:
                if block.per_row and ket.shape[0] == 1:
                    ket = ket.expand(adjoint.shape[0], 1, ket.shape[-1])
                ket = apply_local(ket, adjoint, block.space, n)
    if first < prefix:
        bras = relayout(bras, layout, _prefix_layout(blocks, prefix, n), spare(bras))
        term, term_slots = _prefix_terms(
            prepared, tensors, blocks, prefix, bras, needed, start, stop
        )
        terms.append(term.real if real else term)
        slots.extend(term_slots)
    if pending:
        term, term_slots = _batched_summed_terms(prepared, tensors, pending)
        sums.append(term.real if real else term)
        sum_slots.extend(term_slots)
    if scratch is not None:
        pool.give(*scratch)
    per_row = torch.cat(terms, dim=-1) if terms else None
    total = torch.cat(sums, dim=-1) if sums else None
    return per_row, slots, total, sum_slots


def _kron(factors: list[torch.Tensor]) -> torch.Tensor:
    """``(R, m_0 m_1 ...)``: row-wise Kronecker product, ``factors[0]`` on the lowest bits."""
    vec = factors[0]
    for factor in factors[1:]:
        vec = (factor[:, :, None] * vec[:, None, :]).reshape(vec.shape[0], -1)
    return vec


def _prefix_factors(blocks, prefix: int, bras, start: int, stop: int):
    """The product prefix's factors ``v_j`` of rows ``start:stop`` (their sizes, the span of
    their qubits, the conjugates) and the co-states ``bras (R, M, D)`` restricted to that span
    (the other qubits are in ``|0>``): ``rows, width, factors, sizes, span, lam, conj``."""
    rows, width = bras.shape[0], bras.shape[1]
    factors = [row_slice(block.matrix, start, stop)[..., 0] for block in blocks[:prefix]]
    sizes = [f.shape[-1] for f in factors]
    span = 1
    for size in sizes:
        span *= size
    lam = bras[..., :span].reshape(rows, width, span)
    conj = [f.conj() for f in factors]
    return rows, width, factors, sizes, span, lam, conj


def _prefix_terms_by_block(
    prepared, tensors, blocks, prefix: int, bras, needed, start: int, stop: int
):
    """Terms ``<lambda| Q_j Gen_s Q_j^dagger |psi>`` ``(R, M, S)`` of the product prefix's gates,
    ``bras (R, M, D)`` the co-states after the prefix in its layout. With
    ``|psi> = v_0 (x) ... (x) v_{P-1} (x) |0...0>`` and ``u_j`` the co-state contracted with the
    conjugates of every factor but ``v_j``, a term is ``(Q^dagger u_j)^dagger Gen (Q^dagger v_j)``:
    no per-row ``m x m`` transition matrices and no adjoint passes through the prefix."""
    prefix_parts = _prefix_factors(blocks, prefix, bras, start, stop)
    rows, width, factors, sizes, span, lam, conj = prefix_parts
    terms, slots = [], []
    low = 1
    for j, block in enumerate(blocks[:prefix]):
        size = sizes[j]
        chosen = [k for k, i in enumerate(block.ops) if i in needed]
        if not chosen:
            low *= size
            continue
        # u_j[r, k, a] = sum_{h, l} lam[r, k, h, a, l] conj(v_high[r, h]) conj(v_low[r, l])
        u = lam.reshape(rows, -1, low)
        if low > 1:
            u = (u @ _kron(conj[:j])[:, :, None])[..., 0]  # factors below j
        high = span // (low * size)
        u = u.reshape(rows, width, high, size)
        if high > 1:
            u = (_kron(conj[j + 1 :])[:, None, None, :] @ u)[:, :, 0]  # factors above j
        else:
            u = u[:, :, 0]
        # (elementwise products and sums below: many tiny matrices, slow as batched GEMMs)
        low *= size
        positions = _positions(prepared, block.ops, block.space)
        q = torch.stack([row_slice(block.suffixes[k], start, stop) for k in chosen])  # (K,R,m,m)
        left = (q[:, :, None] * u.conj()[None, :, :, :, None]).sum(-2)  # conj(Q^dagger u)
        right = (q.conj() * factors[j][None, :, :, None]).sum(-2)  # (K, R, m): Q^dagger v
        outer = (left[..., :, None] * right[:, :, None, None, :]).flatten(-2)  # (K, R, M, m*m)
        lists = tuple(positions[k] for k in chosen)
        if len({len(p) for p in lists}) == 1:
            traces = _trace_matrices(lists, block.space.width, outer.dtype, outer.device)
            reduced = (outer.flatten(1, -2) @ traces).unflatten(1, outer.shape[1:-1])
            reduced = reduced.unbind(0)  # (R, M, d*d) per gate
        else:
            reduced = [
                outer[g] @ _trace_matrices((p,), block.space.width, outer.dtype, outer.device)[0]
                for g, p in enumerate(lists)
            ]
        for k, red in zip(chosen, reduced, strict=True):
            i = block.ops[k]
            gens = row_slice(tensors.per_row[i].generators, start, stop, batched_dims=4)
            if gens.dim() == 4:  # (R, A, d, d): per-row generators
                terms.append(torch.einsum("rmx,rax->rma", red, gens.flatten(-2)))
            else:
                terms.append(red @ gens.flatten(-2).T)
            slots.extend(prepared.ops[i].slots)
    return torch.cat(terms, dim=-1), slots


#: Whether the product prefix's gradient terms are formed for all its gates in a few batched
#: products (:func:`_prefix_terms`); ``False``: block by block with partial traces (the
#: reference, :func:`_prefix_terms_by_block`).
BATCHED_PREFIX_TERMS = True


def _prefix_terms(prepared, tensors, blocks, prefix: int, bras, needed, start: int, stop: int):
    """Terms ``<lambda| Q_j Gen_s Q_j^dagger |psi>`` ``(R, M, S)`` of the product prefix's gates,
    ``bras (R, M, D)`` the co-states after the prefix in its layout. With
    ``|psi> = v_0 (x) ... (x) v_{P-1} (x) |0...0>`` and ``u_j`` the co-state contracted with the
    conjugates of every factor but ``v_j``, a term is ``(Q^dagger u_j)^dagger Gen (Q^dagger v_j)``:
    no per-row ``m x m`` transition matrices and no adjoint passes through the prefix. All gates
    of a factor width and generator shape are handled together: one product ``Q^dagger [u; v]``,
    one with the (embedded) generators, one contraction."""
    if not BATCHED_PREFIX_TERMS:
        return _prefix_terms_by_block(prepared, tensors, blocks, prefix, bras, needed, start, stop)
    prefix_parts = _prefix_factors(blocks, prefix, bras, start, stop)
    rows, width, factors, sizes, span, lam, conj = prefix_parts
    chosen_by_block = [[k for k, i in enumerate(b.ops) if i in needed] for b in blocks[:prefix]]
    # kron of the conjugated factors below / above each block
    lows: list = [None] * prefix
    for j in range(1, prefix):
        below = lows[j - 1]
        lows[j] = conj[0] if below is None else _kron([below, conj[j - 1]])
    highs: list = [None] * prefix
    for j in range(prefix - 2, -1, -1):
        above = highs[j + 1]
        highs[j] = conj[j + 1] if above is None else _kron([conj[j + 1], above])
    groups: dict = {}  # (m, gens shape) -> [(Q, uv index, gens, positions, width, slots)]
    uvs = []
    low = 1
    for j, block in enumerate(blocks[:prefix]):
        size = sizes[j]
        chosen = chosen_by_block[j]
        if not chosen:
            low *= size
            continue
        # u_j[r, k, a] = sum_{h, l} lam[r, k, h, a, l] conj(v_high[r, h]) conj(v_low[r, l])
        u = lam.reshape(rows, -1, low)
        if low > 1:
            u = (u @ lows[j][:, :, None])[..., 0]
        high = span // (low * size)
        u = u.reshape(rows, width, high, size)
        u = (highs[j][:, None, None, :] @ u)[:, :, 0] if high > 1 else u[:, :, 0]
        low *= size
        uvs.append(torch.cat([u, factors[j][:, None, :]], dim=1))  # (R, M + 1, m)
        positions = _positions(prepared, block.ops, block.space)
        for k in chosen:
            i = block.ops[k]
            gens = row_slice(tensors.per_row[i].generators, start, stop, batched_dims=4)
            key = (size, gens.dim(), tuple(gens.shape[-3:]))
            groups.setdefault(key, []).append(
                (row_slice(block.suffixes[k], start, stop), len(uvs) - 1, gens, positions[k], i)
            )
    terms, slots = [], []
    for (size, gdim, _), members in groups.items():
        q = torch.stack([member[0] for member in members])  # (K, R, m, m)
        uv = torch.stack([uvs[member[1]] for member in members])  # (K, R, M + 1, m)
        z = uv @ q.conj()  # (Q^dagger [u; v])^T
        lists = [member[3] for member in members]
        block_width = size.bit_length() - 1
        if gdim == 4:  # per-row generators (R, A, d, d) -> (R, A, K, m, m) -> (K, R, A, m, m)
            local = torch.stack([member[2] for member in members], dim=2)
            gens = embed(local, lists, block_width).permute(2, 0, 1, 3, 4)
        else:  # (A, d, d) -> (K, 1, A, m, m)
            local = torch.stack([member[2] for member in members], dim=1)
            gens = embed(local, lists, block_width).transpose(0, 1)[:, None]
        image = (gens @ z[:, :, None, width:].mT)[..., 0]  # (K, R, A, m): Gen Q^dagger v
        term = z[:, :, :width].conj() @ image.mT  # (K, R, M, A)
        terms.append(term.permute(1, 2, 0, 3).flatten(2))  # (R, M, K*A)
        slots.extend(s for member in members for s in prepared.ops[member[4]].slots)
    return torch.cat(terms, dim=-1), slots


@lru_cache(maxsize=1024)
def _column_order(position_lists: tuple[tuple[int, ...], ...], width: int, device) -> torch.Tensor:
    """``(G, m, m)`` gather indices: column ``o * d + x`` of gate ``g``'s row is the block index
    whose bits at ``position_lists[g]`` are ``x`` (bit ``i`` of ``x`` at position ``i`` of the
    list) and whose other bits, ascending, are ``o``: an ``m x m`` matrix gathered with it is
    ``(m, m / d, d)``, the gate's qubits last."""
    m = 1 << width
    out = []
    for positions in position_lists:
        others = [p for p in range(width) if p not in positions]
        d = 1 << len(positions)
        order = np.zeros(m, dtype=np.int64)
        for o in range(m // d):
            for x in range(d):
                c = 0
                for i, p in enumerate(positions):
                    c |= ((x >> i) & 1) << p
                for i, p in enumerate(others):
                    c |= ((o >> i) & 1) << p
                order[o * d + x] = c
        out.append(np.broadcast_to(order, (m, m)))
    return torch.as_tensor(np.stack(out), device=device)


def _workspace(prepared: PreparedProgram, name: str, shape: tuple[int, ...], dtype) -> torch.Tensor:
    """A scratch tensor kept in the program's memo (contents undefined; one per name and
    shape, so only for results that are consumed before the next call)."""
    cache = prepared.memo.get("workspace")
    if cache is None:
        cache = prepared.memo["workspace"] = {}
    key = (name, tuple(shape), dtype)
    tensor = cache.get(key)
    if tensor is None:
        tensor = cache[key] = torch.empty(key[1], dtype=dtype, device=prepared.device)
    return tensor


def _batched_summed_terms(prepared, tensors: GateTensors, pending):
    """:func:`_summed_terms` of every block at once, ``pending`` ``[(block, chosen, T (M, m, m))]``:
    gates grouped by block width and generator shape; per group ``W = T Q`` (one batched
    product), ``tr_others(Q^dagger W)`` as one product of ``Q`` and ``W`` with their columns
    gathered so that the gate's qubits come last (no full ``Q^dagger T Q``, no trace matrices),
    one product with the generators. Returns the terms ``(M, S)`` and their slots."""
    groups: dict = {}
    for block, chosen, trans in pending:
        positions = _positions(prepared, block.ops, block.space)
        for k in chosen:
            i = block.ops[k]
            gen = tensors.shared_generators[i]
            key = (block.space.width, tuple(gen.shape))
            groups.setdefault(key, []).append((block.suffixes[k], trans, gen, positions[k], i))
    parts, slots = [], []
    for (width, shape), members in groups.items():
        m, d = 1 << width, shape[-1]
        order = _column_order(tuple(member[3] for member in members), width, prepared.device)
        count, cols = len(members), members[0][1].shape[0]
        dtype = members[0][0].dtype
        # workspaces kept across steps: fresh ones of this size cost page faults every step
        stacked = torch.stack(
            [member[0] for member in members], out=_workspace(prepared, "q", (count, m, m), dtype)
        )
        lefts = torch.gather(
            stacked, 2, order, out=_workspace(prepared, "qo", stacked.shape, dtype)
        )
        trans = torch.stack(
            [member[1] for member in members],
            out=_workspace(prepared, "t", (count, cols, m, m), dtype),
        )
        images = torch.matmul(
            trans, lefts[:, None], out=_workspace(prepared, "w", trans.shape, dtype)
        ).view(count, -1, m * m // d, d)
        reduced = lefts.reshape(len(members), 1, m * m // d, d).mH @ images  # (G, M, d, d)
        gens = torch.stack([member[2] for member in members])  # (G, A, d, d)
        part = reduced.flatten(-2) @ gens.conj().flatten(-2).mT  # (G, M, A)
        parts.append(part.movedim(0, 1).flatten(1).conj())
        slots.extend(s for member in members for s in prepared.ops[member[4]].slots)
    return torch.cat(parts, dim=-1), slots


def _summed_terms(prepared, tensors: GateTensors, block: Block, chosen, trans: torch.Tensor):
    """Row-summed terms ``(M, S)`` of the chosen shared gates from the row-summed transitions
    ``T (M, m, m)``: ``conj(sum_ab conj(Q Gen_s Q^dagger)[a, b] T[a, b])``
    ``= conj(sum_xy conj(Gen_s[x, y]) tr_others(Q^dagger T Q)[x, y])``, so each gate conjugates
    ``T`` once (two ``m x m`` products) and reduces it to its own qubits (a partial trace,
    :func:`_trace_matrices`) instead of forming ``Q Gen_s Q^dagger`` for every angle."""
    positions = _positions(prepared, block.ops, block.space)
    lefts = torch.stack([block.suffixes[k] for k in chosen])[:, None]  # (G, 1, m, m)
    inner = (lefts.mH @ trans @ lefts).flatten(-2)  # (G, M, m*m)
    gens = [tensors.shared_generators[block.ops[k]] for k in chosen]  # (A, d, d) each
    if all(gen.shape == gens[0].shape for gen in gens):
        traces = _trace_matrices(
            tuple(positions[k] for k in chosen), block.space.width, inner.dtype, inner.device
        )
        reduced = inner @ traces  # (G, M, d*d)
        part = reduced @ torch.stack(gens).conj().flatten(-2).mT  # (G, M, A)
        return part.movedim(0, 1).flatten(1).conj()
    parts = []
    for g, (k, gen) in enumerate(zip(chosen, gens, strict=True)):
        trace = _trace_matrices((positions[k],), block.space.width, inner.dtype, inner.device)
        parts.append((inner[g] @ trace[0]) @ gen.conj().flatten(-2).T)  # (M, A)
    return torch.cat(parts, dim=-1).conj()


def _rows(state: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    return state if state.shape[0] == 1 else state[start:stop]


def _conjugated_generators(prepared, tensors: GateTensors, block: Block, chosen: list[int]):
    """``Q_j Gen_s Q_j^dagger`` for every angle ``s`` of the chosen gates of a shared block."""
    ops = [block.ops[k] for k in chosen]
    gens = _embed_in_block(
        prepared, tensors.shared_generators, ops, block.space, True, prepared.constant_generators
    )
    lefts = [block.suffixes[k] for k, g in zip(chosen, gens, strict=True) for _ in range(len(g))]
    left = torch.stack(lefts)  # (S, m, m)
    return left @ torch.cat(gens) @ left.conj().transpose(1, 2)


def gradient_terms(
    prepared: PreparedProgram,
    tensors: GateTensors,
    blocks: tuple[Block, ...],
    psi: torch.Tensor,
    bras: torch.Tensor,
    needed: set[int],
    start: int,
    stop: int,
    real_only: bool,
    states: tuple[torch.Tensor, ...] | None = None,
):
    """``<bra| Gen_s |ket>`` terms ``(R, M, S_used)`` and their angle slots, rows ``start:stop``
    (``states``: the forward states after each block, fused layout only; else undone)."""
    if prepared.fused:
        terms, slots, _, _ = _fused_gradient_terms(
            prepared, tensors, blocks, states, psi, bras, needed, start, stop, real_only
        )
        return terms, slots
    n = prepared.program.num_qubits
    earliest = min(needed)
    both = torch.cat([psi[:, None, :], bras], dim=1)  # (R, 1 + M, D): ket and bras
    terms, slots = [], []

    def add_terms(mu: torch.Tensor, op_slots) -> None:
        # sum conj(bra) mu = conj(sum bra conj(mu)): conjugate the small tensor, not the bras
        term = contract(both[:, 1:], mu.conj(), real_only)
        terms.append(term if real_only else term.conj())
        slots.extend(op_slots)

    for block in reversed(blocks):
        if block.ops[-1] < earliest:
            break
        if block.per_row:
            i = block.ops[0]
            gate = tensors.per_row[i]
            adjoint = row_slice(block.matrix, start, stop).conj().transpose(1, 2)
            both = apply_local(both, adjoint, block.space, n)
            if i in needed:
                gens = row_slice(gate.generators, start, stop, batched_dims=4)
                mu = apply_generators_local(both[:, 0], gens, block.space, n)
                add_terms(mu, prepared.ops[i].slots)
            continue
        chosen = [k for k, i in enumerate(block.ops) if i in needed]
        if chosen:
            gens = _conjugated_generators(prepared, tensors, block, chosen)
            mu = apply_generators_local(both[:, 0], gens, block.space, n)
            add_terms(mu, [s for k in chosen for s in prepared.ops[block.ops[k]].slots])
        if block.ops[0] > earliest:
            both = apply_local(both, block.matrix.conj().transpose(0, 1), block.space, n)
    if not terms:
        return None, []
    return torch.cat(terms, dim=-1), slots
