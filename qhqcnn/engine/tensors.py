"""Per-call gate tensors: the program's angles for a batch of parameter rows -> torch matrices.

Gates whose angles are equal on every row (typically the trainable weights, repeated per sample)
are *shared*: one ``(d, d)`` matrix on the gate's own qubits (in the gate's qubit order), later
multiplied into blocks by :mod:`.sweep`. Gates whose angles vary are *per-row*: ``(R, m, m)``
matrices embedded in their :class:`~.layout.ApplySpace`, or in the full register (dense layout,
while that stays below :data:`PER_ROW_FULL_BYTES`). Matrices of gates sharing a model are built
in one vectorized NumPy call and moved to torch in one transfer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch

from . import torch_gates
from .embedding import embedding_indices
from .layout import ApplySpace, apply_space, full_space
from .program import GateOp, Program

#: Largest per-row full-register tensor (bytes) built in the dense layout; beyond it, stay local.
PER_ROW_FULL_BYTES = 1 << 28


@dataclass(frozen=True, eq=False)
class PreparedProgram:
    """A (fused) program plus its constant tensors for one simulator configuration."""

    program: Program
    dense: bool
    device: torch.device
    dtype: torch.dtype
    fixed: dict[int, torch.Tensor]  # op index -> (d, d) matrix of a constant gate
    constant_generators: dict[int, torch.Tensor]  # op index -> (A, d, d), angle-independent
    param_ops: tuple[int, ...]  # indices of ops with angles
    linear: torch.Tensor  # the angle map's (S, P) matrix, for the chain rule
    slot_table: np.ndarray  # (J, A_max) slots of each parameterized op, padded with -1
    fused: bool = False  # local layout with fused blocks (see :mod:`.sweep`)
    memo: dict = field(default_factory=dict, repr=False)  # per-pattern structures

    @property
    def ops(self) -> tuple[GateOp, ...]:
        return self.program.ops


@dataclass(frozen=True, eq=False)
class PerRowGate:
    """A gate whose angles differ between rows: matrices ``(R, m, m)`` in ``space``."""

    matrix: torch.Tensor
    generators: torch.Tensor  # (R, A, m, m), or (A, m, m) when independent of the angles
    space: ApplySpace | None  # None: local (R, d, d) matrices in the gate's qubit order (fused)


@dataclass(eq=False)
class GateTensors:
    """Shared gates as local ``(d, d)`` matrices / ``(A, d, d)`` generators; per-row gates."""

    shared: dict[int, torch.Tensor]
    shared_generators: dict[int, torch.Tensor]
    per_row: dict[int, PerRowGate]
    angles: np.ndarray  # (R, S)


def prepare(
    program: Program, dense: bool, device: torch.device, dtype: torch.dtype, fused: bool = False
):
    """Constant tensors of ``program`` for this layout, device and dtype (``fused``: the local
    layout fuses gates into blocks, per-row gates included, so per-row gates stay local)."""
    fixed: dict[int, torch.Tensor] = {}
    constant: dict[int, torch.Tensor] = {}
    for i, op in enumerate(program.ops):
        if op.is_fixed:
            fixed[i] = torch.as_tensor(op.model.matrix).to(device, dtype)
        elif op.model.constant_generators is not None:
            constant[i] = torch.as_tensor(op.model.constant_generators).to(device, dtype)
    param_ops = tuple(i for i, op in enumerate(program.ops) if not op.is_fixed)
    linear = torch.as_tensor(program.angle_map.linear).to(device, torch.float64)
    width = max((len(program.ops[i].slots) for i in param_ops), default=0)
    slot_table = np.full((len(param_ops), width), -1, dtype=np.int64)
    for row, i in enumerate(param_ops):
        slot_table[row, : len(program.ops[i].slots)] = program.ops[i].slots
    return PreparedProgram(
        program, dense, device, dtype, fixed, constant, param_ops, linear, slot_table, fused
    )


@lru_cache(maxsize=4096)
def _gather_index(
    position_lists: tuple[tuple[int, ...], ...], width: int, d: int, device: torch.device
) -> torch.Tensor:
    """Indices into ``[gate_0 entries, gate_1 entries, ..., 0]`` giving ``(G, m, m)`` embeddings
    (gate ``g``'s qubit ``i`` placed at ``position_lists[g][i]`` of a ``width``-qubit space)."""
    blocks = []
    for g, positions in enumerate(position_lists):
        flat, mask = embedding_indices(positions, width)
        blocks.append(np.where(mask, flat + g * d * d, len(position_lists) * d * d))
    return torch.as_tensor(np.stack(blocks), device=device)


def embed(local: torch.Tensor, position_lists, width: int) -> torch.Tensor:
    """``local (..., G, d, d)`` for G gates -> ``(..., G, m, m)`` in a ``width``-qubit space."""
    position_lists = tuple(tuple(p) for p in position_lists)
    if all(p == tuple(range(width)) for p in position_lists):
        return local
    index = _gather_index(position_lists, width, local.shape[-1], local.device)
    lead = local.shape[:-3]
    flat = local.reshape(lead + (-1,))
    padded = torch.cat([flat, flat.new_zeros(lead + (1,))], dim=-1)
    return padded.index_select(-1, index.reshape(-1)).reshape(lead + tuple(index.shape))


def _to_torch(array: np.ndarray, prepared: PreparedProgram) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).to(prepared.device, prepared.dtype)


def _build(kind: str, model, angles, prepared: PreparedProgram) -> torch.Tensor:
    """``model.matrices`` / ``model.generators`` of NumPy ``angles`` (built on the host, then
    copied), or of a float64 angle tensor (built with torch ops on its device)."""
    if isinstance(angles, torch.Tensor):
        return getattr(torch_gates, kind)(model, angles).to(prepared.device, prepared.dtype)
    return _to_torch(getattr(model, kind)(angles), prepared)


def _group_ops(
    prepared: PreparedProgram, angles, op_varies: np.ndarray | None = None
) -> list[tuple[bool, list[int]]]:
    """Parameterized ops grouped by model and by whether their angles vary across rows
    (``op_varies``: given per parameterized op, else read from the NumPy ``angles``)."""
    if op_varies is None:
        varies = np.zeros(angles.shape[1] + 1, dtype=bool)  # last entry: padding of slot_table
        if angles.shape[0] > 1:
            varies[:-1] = (angles != angles[:1]).any(axis=0)
        op_varies = varies[prepared.slot_table].any(axis=1)
    key = ("groups", op_varies.tobytes())
    hit = prepared.memo.get(key)
    if hit is not None:
        return hit
    groups: dict[tuple[int, bool], list[int]] = {}
    for i, per_row in zip(prepared.param_ops, op_varies.tolist(), strict=True):
        groups.setdefault((id(prepared.ops[i].model), per_row), []).append(i)
    result = [(per_row, members) for (_, per_row), members in groups.items()]
    if len(prepared.memo) > 256:
        prepared.memo.clear()
    prepared.memo[key] = result
    return result


def _per_row_spaces(prepared: PreparedProgram, members: list[int], full: bool):
    n = prepared.program.num_qubits
    if full:
        space = full_space(n)
        return [space] * len(members), [prepared.ops[i].qubits for i in members]
    spaces = [apply_space(prepared.ops[i].qubits, n) for i in members]
    return spaces, [s.positions for s in spaces]


def _embed_members(tensor: torch.Tensor, spaces, positions, angle_axis: bool):
    """Per-member embedding of ``([R,] G, [A,] d, d)`` into each member's space."""
    if angle_axis:
        tensor = tensor.movedim(-3, 0)  # gates at axis -3
    by_width: dict[int, list[int]] = {}
    for g, space in enumerate(spaces):
        by_width.setdefault(space.width, []).append(g)
    out: list[torch.Tensor | None] = [None] * len(spaces)
    for width, gates in by_width.items():
        part = tensor if len(gates) == len(spaces) else tensor[..., gates, :, :]
        part = embed(part, [positions[g] for g in gates], width)
        part = part.movedim(0, -3) if angle_axis else part
        for g, item in zip(gates, part.unbind(-4 if angle_axis else -3), strict=True):
            out[g] = item
    return out


def gate_tensors(
    prepared: PreparedProgram, angles, op_varies: np.ndarray | None = None
) -> GateTensors:
    """Matrices and generators of every gate for parameter rows with ``angles (R, S)``: a NumPy
    array (gates built on the host), or a float64 tensor (gates built with torch ops on its
    device; every model must then have a torch builder, :func:`.torch_gates.supported`, and
    ``op_varies``, whether each parameterized op is per-row, must be given)."""
    ops = prepared.ops
    n = prepared.program.num_qubits
    shared: dict[int, torch.Tensor] = dict(prepared.fixed)
    shared_generators: dict[int, torch.Tensor] = {}
    per_row: dict[int, PerRowGate] = {}
    itemsize = torch.empty((), dtype=prepared.dtype).element_size()
    for varying, members in _group_ops(prepared, angles, op_varies):
        model = ops[members[0]].model
        slots = np.array([ops[i].slots for i in members])  # (G, A)
        if isinstance(angles, torch.Tensor):
            slots = torch.as_tensor(slots, device=angles.device)
        constant = model.constant_generators is not None
        if not varying:
            group_angles = angles[0, slots]  # (G, A)
            mats = _build("matrices", model, group_angles, prepared)
            gens = None if constant else _build("generators", model, group_angles, prepared)
            for g, i in enumerate(members):
                shared[i] = mats[g]
                shared_generators[i] = prepared.constant_generators[i] if constant else gens[g]
            continue
        group_angles = angles[:, slots]  # (R, G, A)
        if prepared.fused:  # local (R, d, d) matrices; sweep.py embeds them in fused blocks
            mats = _build("matrices", model, group_angles, prepared)  # (R, G, d, d)
            if not constant:
                gens = _build("generators", model, group_angles, prepared)  # (R, G, A, d, d)
            for g, i in enumerate(members):
                gen = prepared.constant_generators[i] if constant else gens[:, g]
                per_row[i] = PerRowGate(mats[:, g], gen, None)
            continue
        count = 1 if constant else 1 + model.num_angles
        size = angles.shape[0] * len(members) * count * (1 << 2 * n) * itemsize
        spaces, positions = _per_row_spaces(
            prepared, members, prepared.dense and size <= PER_ROW_FULL_BYTES
        )
        mats = _build("matrices", model, group_angles, prepared)
        mats = _embed_members(mats, spaces, positions, angle_axis=False)
        if constant:
            gens = torch.stack([prepared.constant_generators[i] for i in members])  # (G, A, d, d)
        else:
            gens = _build("generators", model, group_angles, prepared)  # (R, G, A, d, d)
        gens = _embed_members(gens, spaces, positions, angle_axis=True)
        for g, i in enumerate(members):
            per_row[i] = PerRowGate(mats[g], gens[g], spaces[g])
    return GateTensors(shared, shared_generators, per_row, angles)
