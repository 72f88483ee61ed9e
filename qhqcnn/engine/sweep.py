"""Forward simulation and adjoint gradients over *blocks* of gates.

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

import torch

from .contraction import contract, row_slice
from .layout import ApplySpace, apply_generators_local, apply_local, apply_space, full_space
from .tensors import GateTensors, PreparedProgram, embed

#: Largest qubit support of a block of shared gates in the local (many-qubit) layout.
BLOCK_QUBITS = 4


@dataclass(frozen=True, eq=False)
class Block:
    """Gates ``ops`` (in circuit order) applied as one matrix in ``space``."""

    ops: tuple[int, ...]
    space: ApplySpace
    per_row: bool
    matrix: torch.Tensor  # (m, m) product, or (R, m, m) for a per-row gate
    suffixes: tuple[torch.Tensor, ...] = ()  # Q_j for j = 0..J-1 (shared blocks)


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


def _positions(prepared: PreparedProgram, ops, space: ApplySpace) -> list[tuple[int, ...]]:
    where = dict(zip(space.qubits, space.positions, strict=True))
    return [tuple(where[q] for q in prepared.ops[i].qubits) for i in ops]


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


def forward(prepared: PreparedProgram, blocks: tuple[Block, ...], num_rows: int) -> torch.Tensor:
    """Final states ``(R, D)`` of a batch."""
    n = prepared.program.num_qubits
    dim = 1 << n
    state = torch.zeros((1, 1, dim), dtype=prepared.dtype, device=prepared.device)
    state[0, 0, 0] = 1
    for block in blocks:
        if block.per_row and state.shape[0] != num_rows:
            state = state.expand(num_rows, 1, dim)
        state = apply_local(state, block.matrix, block.space, n)
    return state[:, 0].expand(num_rows, dim)


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
):
    """``<bra| Gen_s |ket>`` terms ``(R, M, S_used)`` and their angle slots, rows ``start:stop``."""
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
