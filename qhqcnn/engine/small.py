"""The *segment* path for few-qubit programs: whole-register matrices, few torch calls per batch.

At a few qubits the arithmetic of a batch is tiny (``2**n`` amplitudes per row) and the time of
the block path (:mod:`.sweep`) is its per-gate Python and torch overhead. This path splits the
gate sequence into *segments*: maximal runs of gates that are the same on every row (*shared*:
weights and constant gates) and runs of gates whose angles differ between rows (*per-row*: the
input encoding).

* A shared segment is one ``2**n x 2**n`` matrix per parameterized gate (gathered in NumPy
  from the gates' local matrices; constant gates after it folded in: permutations by permuting
  the gather, others by a product), reduced by a loop of small NumPy products on the host (at
  ``2**n <= 32`` cheaper than batched torch products) and moved in one transfer. The state
  after it is one GEMM. Its gradient terms are ``<lambda| E_j^dagger Gen_s E_j |phi>`` for the
  state ``phi`` and co-state ``lambda`` before the segment and ``E_j`` the product before gate
  ``j``: the conjugated generators of all its angles come from a few batched products (for a
  single-qubit gate from the Gram matrix of ``E_j``'s two row blocks, shared by the gate's
  angles), their images of the states from one real GEMM (half of one for a real ``phi``,
  e.g. after an RY encoding; realness is known from the gates) and the terms from one batched
  real product. For :class:`~.torch_layer.ExactTorchLayer` the terms of weight-only gates are
  summed over the rows (``sum_r |phi_r><lambda_r|``, one GEMM) instead.
* A first per-row run of one-qubit gates on ``|0...0>`` (an angle encoding) is the Kronecker
  product of the gates' first columns.
* A per-row segment is applied gate by gate to the states, each gate as its own small matrix on
  a view of the states (:func:`local_space`: no whole-register matrix per row). It is cut into
  runs; in a *commuting* run (gates on disjoint qubits whose generators commute with the gate:
  Pauli rotations and their controlled forms, e.g. an angle encoding) every term is taken after
  the run, ``<lambda| Gen_s |phi>``, with all of the run's generators in one GEMM; other gates
  are undone one by one with the term taken before each. Co-states are not carried back past
  the earliest gate whose gradient is needed.

Values and gradients equal the block path's to float rounding (tests check both against
Qiskit). Used when the program has at most ``small_max_qubits`` qubits (see
:class:`~.statevector.StatevectorSimulator`) and the states it keeps fit :data:`PER_ROW_BYTES`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .embedding import embedding_indices
from .layout import ApplySpace, apply_generators_local, apply_local
from .tensors import PreparedProgram, embed

#: Programs up to this many qubits use the segment path by default.
DEFAULT_SMALL_MAX_QUBITS = 5
#: Largest size (bytes) of the states kept before the per-row gates of a batch; beyond it the
#: simulator falls back to the block path.
PER_ROW_BYTES = 1 << 28


@dataclass(frozen=True, eq=False)
class Segment:
    """A run of gates: ``ops`` (circuit order), the positions in ``ops`` of its parameterized
    gates, their angle slots (flattened, the order of its gradient terms) and, per slot, the
    position (in ``params``) of the gate it belongs to. A per-row segment is cut into *runs*:
    a commuting run holds gates on pairwise disjoint qubits whose generators commute with their
    own gate, so every gradient term of the run can be taken after its last gate."""

    per_row: bool
    ops: tuple[int, ...]
    params: tuple[int, ...]
    slots: tuple[int, ...]
    owner: tuple[int, ...]
    runs: tuple[tuple[int, int, bool], ...] = ()  # per-row: (begin, end, commuting) positions


@dataclass(frozen=True, eq=False)
class Plan:
    """Segments, and the parameterized gates grouped by model and kind for building them."""

    segments: tuple[Segment, ...]
    groups: tuple[tuple[bool, object, tuple[int, ...], np.ndarray], ...]  # per_row, model, ops


@dataclass(frozen=True, eq=False)
class SharedData:
    """A shared segment of one batch: its input state ``(1 or R, D)``, product ``(D, D)``, the
    product of the gates before each parameterized gate ``(J, D, D)`` and each parameterized
    gate's generators on its own qubits ``(A, d, d)``."""

    state_in: torch.Tensor
    total: torch.Tensor
    prefixes: torch.Tensor | None
    generators: tuple[torch.Tensor, ...]
    state_real: bool = False  # whether the input state is known to be real


@dataclass(frozen=True, eq=False)
class PerRowData:
    """A per-row segment of one batch: each gate's space and matrix in it (``(R, m, m)``, or
    ``(m, m)`` for a constant gate), the state before each parameterized gate ``(1 or R, D)``,
    its generators (``(A, m, m)`` or ``(R, A, m, m)``) and the state after each run."""

    spaces: tuple[ApplySpace, ...]
    matrices: tuple[torch.Tensor, ...]
    before: tuple[torch.Tensor, ...]
    generators: tuple[torch.Tensor, ...]
    after: tuple[torch.Tensor | None, ...]  # the state after each commuting run
    after_real: tuple[bool, ...] = ()  # per run: whether its state after is known to be real


@dataclass(frozen=True, eq=False)
class SegmentTensors:
    """What a forward pass of the segment path keeps for the adjoint sweep (``angles``: the
    batch's gate angles ``(R, S)``, as in :class:`~.tensors.GateTensors`)."""

    plan: Plan
    data: tuple[SharedData | PerRowData, ...]
    angles: np.ndarray


def op_varies(prepared: PreparedProgram, angles: np.ndarray) -> np.ndarray:
    """For each parameterized op, whether its angles differ between the rows of the batch."""
    varies = np.zeros(angles.shape[1] + 1, dtype=bool)  # last entry: padding of slot_table
    if angles.shape[0] > 1:
        varies[:-1] = (angles != angles[:1]).any(axis=0)
    return varies[prepared.slot_table].any(axis=1)


def fits(prepared: PreparedProgram, varies: np.ndarray, num_rows: int) -> bool:
    """Whether the states kept before the per-row gates of this batch (and their gate tensors)
    stay within :data:`PER_ROW_BYTES`."""
    itemsize = torch.empty((), dtype=prepared.dtype).element_size()
    dim = 1 << prepared.program.num_qubits
    per_row_ops = int(varies.sum())
    return num_rows * per_row_ops * dim * itemsize * 2 <= PER_ROW_BYTES


def _plan(prepared: PreparedProgram, varies: np.ndarray) -> Plan:
    key = ("segments", varies.tobytes())
    hit = prepared.memo.get(key)
    if hit is not None:
        return hit
    ops = prepared.ops
    kind = dict(zip(prepared.param_ops, varies.tolist(), strict=True))
    # a constant gate goes with the next parameterized gate (shared if none follows)
    following = False
    labels = [False] * len(ops)
    for i in range(len(ops) - 1, -1, -1):
        if i in kind:
            following = kind[i]
        labels[i] = following
    runs: list[list[int]] = []
    for i, per_row in enumerate(labels):
        if runs and labels[runs[-1][-1]] == per_row:
            runs[-1].append(i)
        else:
            runs.append([i])
    segments = []
    for run in runs:
        params = tuple(p for p, i in enumerate(run) if i in kind)
        slots = tuple(s for p in params for s in ops[run[p]].slots)
        owner = tuple(k for k, p in enumerate(params) for _ in ops[run[p]].slots)
        per_row = labels[run[0]]
        commuting = _commuting_runs(prepared, run, kind) if per_row else ()
        segments.append(Segment(per_row, tuple(run), params, slots, owner, commuting))
    grouped: dict[tuple[int, bool], list[int]] = {}
    for i in prepared.param_ops:
        grouped.setdefault((id(ops[i].model), kind[i]), []).append(i)
    groups = tuple(
        (per_row, ops[members[0]].model, tuple(members), np.array([ops[i].slots for i in members]))
        for (_, per_row), members in grouped.items()
    )
    plan = Plan(tuple(segments), groups)
    if len(prepared.memo) > 256:
        prepared.memo.clear()
    prepared.memo[key] = plan
    return plan


def _commutes_with_itself(model) -> bool:
    """Whether ``G(a) Gen G(a)^dagger = Gen`` for the model's constant generators (checked at
    two angles): ``exp(-i a H)`` gates and their controlled forms."""
    gens = model.constant_generators
    if gens is None or model.num_angles == 0:
        return False
    for angle in (0.37, -1.91):
        gate = model.matrices(np.full((1, model.num_angles), angle))[0]
        for gen in gens:
            if not np.allclose(gate @ gen @ gate.conj().T, gen, rtol=0, atol=1e-12):
                return False
    return True


def _commuting_runs(prepared: PreparedProgram, ops: list[int], kind: dict) -> tuple:
    """``(begin, end, commuting)`` positions cutting a per-row segment into runs."""
    runs: list[list] = []
    support: set[int] = set()
    for position, i in enumerate(ops):
        op = prepared.ops[i]
        qubits = set(op.qubits)
        if i in kind:
            key = ("commutes", id(op.model))
            if key not in prepared.memo:
                prepared.memo[key] = _commutes_with_itself(op.model)
            joins = prepared.memo[key]
        else:
            joins = True  # a constant gate only has to act on other qubits
        if runs and runs[-1][2] and joins and not support & qubits:
            runs[-1][1] = position + 1
            support |= qubits
        else:
            runs.append([position, position + 1, joins])
            support = qubits
    return tuple((begin, end, commuting) for begin, end, commuting in runs)


def local_space(qubits: tuple[int, ...], num_qubits: int) -> ApplySpace:
    """Where a per-row gate is applied: its own contiguous qubit range (a ``low`` block when it
    starts at qubit 0, else a ``span``), or its qubits moved last (``permute``)."""
    low, top = min(qubits), max(qubits) + 1
    if top - low == len(qubits):
        if low == 0:
            return ApplySpace("low", top, 0, qubits, qubits)
        return ApplySpace("span", top - low, low, tuple(q - low for q in qubits), qubits)
    return ApplySpace("permute", len(qubits), 0, tuple(range(len(qubits))), qubits)


def _place(local: torch.Tensor, space: ApplySpace) -> torch.Tensor:
    """A ``(..., d, d)`` gate tensor placed in its per-row ``space`` (``(..., m, m)``)."""
    if space.positions == tuple(range(space.width)):
        return local
    return embed(local[..., None, :, :], [space.positions], space.width)[..., 0, :, :]


def _constants(prepared: PreparedProgram) -> tuple[dict, dict, dict, dict]:
    """Constant gates and constant generators, whole-register (shared segments) and in their
    per-row spaces (cached)."""
    hit = prepared.memo.get("segment-constants")
    if hit is not None:
        return hit
    n = prepared.program.num_qubits
    ops = prepared.ops
    fixed = {i: embed(m[None], [ops[i].qubits], n)[0] for i, m in prepared.fixed.items()}
    gens = {
        i: embed(g[:, None], [ops[i].qubits], n)[:, 0]
        for i, g in prepared.constant_generators.items()
    }
    spaces = {i: local_space(op.qubits, n) for i, op in enumerate(ops)}
    fixed_local = {i: _place(m, spaces[i]) for i, m in prepared.fixed.items()}
    gens_local = {i: _place(g, spaces[i]) for i, g in prepared.constant_generators.items()}
    hit = (fixed, gens, spaces, (fixed_local, gens_local))
    prepared.memo["segment-constants"] = hit
    return hit


def _to_torch(array: np.ndarray, prepared: PreparedProgram) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).to(prepared.device, prepared.dtype)


def _gate_tensors(prepared: PreparedProgram, plan: Plan, angles: np.ndarray):
    """Matrices and generators of every gate. Shared segments: whole-register ``(D, D)``
    matrices, generators ``(A, d, d)`` on their own qubits; per-row segments: in each gate's
    :func:`local_space`, ``(R, m, m)`` and ``(R, A, m, m)`` (constant ones ``(m, m)``,
    ``(A, m, m)``). One NumPy call and one transfer per group of gates of one model and kind.
    The shared gates' whole-register matrices are not built here: their local matrices are
    returned by group (``members -> (G, d, d)`` NumPy) for :func:`_shared_stack`."""
    fixed, constant, spaces, (fixed_local, constant_local) = _constants(prepared)
    matrices: dict[int, torch.Tensor] = {}
    generators: dict[int, torch.Tensor] = {}
    shared_local: dict[tuple[int, ...], np.ndarray] = {}  # shared groups: (G, d, d) on the host
    real = set(_real_fixed(prepared))  # ops whose matrices are real on every row (RY, CX, ...)
    for per_row, model, members, slots in plan.groups:
        group_angles = angles[:, slots] if per_row else angles[:1, slots]  # (R', G, A)
        host = model.matrices(group_angles)  # (R', G, d, d)
        if not host.imag.any():
            real.update(members)
        gens = None
        if members[0] not in constant:
            gens = _to_torch(model.generators(group_angles), prepared)  # (R', G, A, d, d)
        if not per_row:
            host = host[0]
        else:
            local = _to_torch(host, prepared)
            for g, i in enumerate(members):
                matrices[i] = _place(local[:, g], spaces[i])
                generators[i] = constant_local[i] if gens is None else _place(gens[:, g], spaces[i])
            continue
        shared_local[members] = host
        for g, i in enumerate(members):  # generators stay on the gate's qubits (A, d, d)
            generators[i] = prepared.constant_generators[i] if gens is None else gens[0, g]
    return matrices, generators, fixed, (fixed_local, spaces), shared_local, real


def _real_fixed(prepared: PreparedProgram) -> frozenset[int]:
    """The constant gates with real matrices (cached)."""
    hit = prepared.memo.get("segment-real-fixed")
    if hit is None:
        hit = frozenset(i for i, m in prepared.fixed.items() if not bool(m.imag.any()))
        prepared.memo["segment-real-fixed"] = hit
    return hit


def _folding(prepared: PreparedProgram, segment: Segment, fixed: dict):
    """A shared segment's constant gates folded into products (cached): the product of those
    before its first parameterized gate (``None`` if none), the product of those after each
    parameterized gate up to the next (``(J, D, D)``; ``None`` if there are none). The scanned
    sequence is ``[lead,] element_0, element_1, ...`` (with an identity put first when there is
    no lead), so its prefix product ``k`` is the product before parameterized gate ``k``."""
    key = ("segment-folding", segment)
    hit = prepared.memo.get(key)
    if hit is not None:
        return hit

    def product(ops):
        out = None
        for i in ops:
            out = fixed[i] if out is None else fixed[i] @ out
        return out

    ops, params = segment.ops, segment.params
    lead = product(ops[: params[0]] if params else ops)
    ends = list(params[1:]) + [len(ops)] if params else []
    following = [product(ops[p + 1 : end]) for p, end in zip(params, ends, strict=True)]
    trails = None
    if any(item is not None for item in following):
        dim = 1 << prepared.program.num_qubits
        eye = torch.eye(dim, dtype=prepared.dtype, device=prepared.device)
        trails = torch.stack([eye if item is None else item for item in following])
    hit = (lead, trails)
    prepared.memo[key] = hit
    return hit


def _stack_plan(prepared: PreparedProgram, plan: Plan, segment: Segment, trails):
    """How :func:`_shared_stack` gathers a shared segment's stacked gate matrices (cached):
    one flat index ``(J, D, D)`` into the concatenated local matrices of the shared groups (a
    trailing zero for the entries off the gate's block), the groups in that order, and whether
    the constant gates after each gate (``trails``) are folded in. They are when every trailing
    product is a permutation matrix (CX, SWAP, X, ...): ``(P M)[a] = M[pi(a)]`` permutes the
    index's rows, which is exact; otherwise the caller multiplies by ``trails``."""
    key = ("segment-stack", segment)
    hit = prepared.memo.get(key)
    if hit is not None:
        return hit
    n = prepared.program.num_qubits
    ops = prepared.ops
    where: dict[int, tuple[tuple[int, ...], int]] = {}
    for per_row, _, members, _ in plan.groups:
        if not per_row:
            for g, i in enumerate(members):
                where[i] = (members, g)
    groups: list[tuple[int, ...]] = []
    for p in segment.params:
        members = where[segment.ops[p]][0]
        if members not in groups:
            groups.append(members)
    offsets, size = {}, 0
    for members in groups:
        offsets[members] = size
        size += len(members) * (1 << len(ops[members[0]].qubits)) ** 2
    perms = None
    if trails is not None:
        host = trails.cpu().numpy()
        nonzero = host != 0
        if (nonzero.sum(-1) == 1).all() and (host[nonzero] == 1).all():
            perms = nonzero.argmax(-1)  # (J, D): row a of P M is row perms[a] of M
    blocks = []
    for j, p in enumerate(segment.params):
        i = segment.ops[p]
        members, g = where[i]
        d = 1 << len(ops[i].qubits)
        flat, mask = embedding_indices(tuple(ops[i].qubits), n)
        index = np.where(mask, offsets[members] + g * d * d + flat, size)
        blocks.append(index if perms is None else index[perms[j]])
    hit = (np.stack(blocks).reshape(-1), tuple(groups), perms is not None or trails is None)
    prepared.memo[key] = hit
    return hit


def _shared_prefixes(prepared, plan, segment, lead, trails, shared_local) -> torch.Tensor:
    """A shared segment's products on the host, ``(J + 1, D, D)``: entry ``j`` is the product
    of everything before its parameterized gate ``j`` (the identity, or the constant gates
    before the first gate), the last one the whole segment. The gate matrices (each times the
    constant gates after it) come from one NumPy gather of the local matrices; at ``2**n <= 32``
    a loop of small NumPy products costs less than batched torch products. One transfer."""
    index, groups, folded = _stack_plan(prepared, plan, segment, trails)
    parts = [shared_local[members].reshape(-1) for members in groups]
    flat = np.concatenate([*parts, np.zeros(1, dtype=parts[0].dtype)])
    dim = 1 << prepared.program.num_qubits
    stacked = flat[index].reshape(-1, dim, dim)
    lead_host, trails_host = _host_folding(prepared, segment, lead, trails)
    if not folded:
        stacked = np.matmul(trails_host, stacked)
    out = np.empty((stacked.shape[0] + 1, dim, dim), dtype=stacked.dtype)
    out[0] = np.eye(dim) if lead_host is None else lead_host
    for j, matrix in enumerate(stacked):
        np.matmul(matrix, out[j], out=out[j + 1])
    return _to_torch(out, prepared)


def _host_folding(prepared: PreparedProgram, segment: Segment, lead, trails):
    """:func:`_folding`'s products as complex128 NumPy arrays (cached)."""
    key = ("segment-folding-host", segment)
    hit = prepared.memo.get(key)
    if hit is None:
        hit = tuple(
            None if item is None else item.cpu().to(torch.complex128).numpy()
            for item in (lead, trails)
        )
        prepared.memo[key] = hit
    return hit


def _product_start(prepared: PreparedProgram, segment: Segment, matrices: dict, rows: int):
    """The state after a per-row segment's first run when it is the first thing applied to
    ``|0...0>`` and every gate of the run acts on one qubit (an angle encoding): the Kronecker
    product of the gates' first columns, ``(R, D)``, in a few broadcast products (``None`` if
    the run is not of that kind). The run's gates are on distinct qubits."""
    begin, end, commuting = segment.runs[0]
    ops = prepared.ops
    if not commuting or segment.ops[0] != 0:
        return None
    columns: dict[int, torch.Tensor] = {}
    for position in range(begin, end):
        i = segment.ops[position]
        if len(ops[i].qubits) != 1:
            return None
        columns[ops[i].qubits[0]] = matrices[i][..., :, 0]  # (R, 2) or (2,)
    n = prepared.program.num_qubits
    state = None
    for q in range(n):  # qubit q is bit q: the new factor goes on the left (more significant)
        column = columns.get(q)
        if column is None:
            if state is not None:
                state = torch.cat([state, torch.zeros_like(state)], dim=-1)
            continue
        column = column.reshape(-1, 2)
        if state is None:
            state = column
            if q:  # qubits below q are |0>: amplitude only at index 0 of their block
                zeros = column.new_zeros((column.shape[0], 2, (1 << q) - 1))
                state = torch.cat([column[:, :, None], zeros], dim=-1).reshape(-1, 2 << q)
            continue
        state = (column[:, :, None] * state[:, None, :]).reshape(-1, 2 * state.shape[-1])
    return state.expand(rows, 1 << n) if state.shape[0] != rows else state


def forward(prepared: PreparedProgram, angles: np.ndarray, varies: np.ndarray):
    """Final states ``(R, D)`` of a batch and the :class:`SegmentTensors` of its sweep."""
    plan = _plan(prepared, varies)
    matrices, generators, fixed, (fixed_local, spaces), shared_local, real_ops = _gate_tensors(
        prepared, plan, angles
    )
    real = True  # whether the state is real so far (known from the gates' matrices)
    n = prepared.program.num_qubits
    rows, dim = angles.shape[0], 1 << n
    state = torch.zeros((1, dim), dtype=prepared.dtype, device=prepared.device)
    state[0, 0] = 1
    data: list[SharedData | PerRowData] = []
    for segment in plan.segments:
        if not segment.per_row:
            lead, trails = _folding(prepared, segment, fixed)
            prefixes, gens = None, ()
            if not segment.params:
                total = lead
            else:
                products = _shared_prefixes(prepared, plan, segment, lead, trails, shared_local)
                total = products[-1]
                prefixes = products[:-1]  # the product before each gate
                gens = tuple(generators[segment.ops[p]] for p in segment.params)
            data.append(SharedData(state, total, prefixes, gens, real))
            state = state @ total.T
            real = real and all(i in real_ops for i in segment.ops)
            continue
        mats, before, gens, after, after_real = [], [], [], [], []
        params = set(segment.params)
        ends = {end: commuting for _, end, commuting in segment.runs}
        skip = 0  # the first run, when it was applied as a Kronecker product of columns
        if not data:
            start = _product_start(prepared, segment, {**fixed_local, **matrices}, rows)
            if start is not None:
                skip = segment.runs[0][1]
        for position, i in enumerate(segment.ops):
            matrix = matrices.get(i, fixed_local.get(i))
            if position < skip:  # its terms are taken after the run: no state before a gate
                if position in params:
                    before.append(None)
                    gens.append(generators[i])
                mats.append(matrix)
                real = real and i in real_ops
                if position + 1 == skip:
                    state = start
                    after.append(state)
                    after_real.append(real)
                continue
            if position in params:
                before.append(state)
                gens.append(generators[i])
            if matrix.dim() == 3 and state.shape[0] != rows:
                state = state.expand(rows, dim)
            state = apply_local(state[:, None], matrix, spaces[i], n)[:, 0]
            mats.append(matrix)
            real = real and i in real_ops
            if position + 1 in ends:
                after.append(state if ends[position + 1] else None)
                after_real.append(real)
        segment_spaces = tuple(spaces[i] for i in segment.ops)
        data.append(
            PerRowData(
                segment_spaces,
                tuple(mats),
                tuple(before),
                tuple(gens),
                tuple(after),
                tuple(after_real),
            )
        )
    psi = state.expand(rows, dim)
    return psi, SegmentTensors(plan, tuple(data), angles)


def _rows(tensor: torch.Tensor, start: int, stop: int, batched_dims: int) -> torch.Tensor:
    if tensor.dim() < batched_dims or tensor.shape[0] == 1:
        return tensor
    return tensor[start:stop]


def _conjugation_plan(prepared: PreparedProgram, segment: Segment):
    """How :func:`_conjugated_generators` takes a shared segment's gates (cached): single-qubit
    gates by row blocks (their positions in ``params``, the row order putting each gate's qubit
    on top, per slot its gate), the others by whole-register generators; and the slots in the
    order of the result."""
    key = ("segment-conjugation", segment)
    hit = prepared.memo.get(key)
    if hit is not None:
        return hit
    n = prepared.program.num_qubits
    dim = 1 << n
    ops = [prepared.ops[segment.ops[p]] for p in segment.params]
    single = [k for k, op in enumerate(ops) if len(op.qubits) == 1]
    other = [k for k, op in enumerate(ops) if len(op.qubits) != 1]
    rows = np.arange(dim)
    flat = []
    for k in single:
        bit = (rows >> ops[k].qubits[0]) & 1
        flat.append(k * dim + np.concatenate([rows[bit == 0], rows[bit == 1]]))
    device = prepared.device
    flat = torch.as_tensor(np.concatenate(flat) if flat else np.zeros(0, np.int64), device=device)
    single_owner = torch.as_tensor(
        [j for j, k in enumerate(single) for _ in ops[k].slots], dtype=torch.long, device=device
    )
    other_owner = torch.as_tensor(
        [k for k in other for _ in ops[k].slots], dtype=torch.long, device=device
    )
    order = tuple(s for k in single + other for s in ops[k].slots)
    hit = (single, flat, single_owner, other, other_owner, order)
    prepared.memo[key] = hit
    return hit


def _conjugated_generators(prepared: PreparedProgram, segment: Segment, data: SharedData):
    """``E_j^dagger Gen_s E_j`` for every slot of a shared segment (``E_j``: the product before
    its gate), ``(S, D, D)``, and the slots in that order. For a gate on one qubit ``q`` with
    ``B_a`` the rows of ``E_j`` where qubit ``q`` is ``a``, this is
    ``sum_ab Gen_s[a, b] B_a^dagger B_b``: the four block products are shared by the gate's
    angles and no whole-register generator is formed."""
    single, flat, single_owner, other, other_owner, order = _conjugation_plan(prepared, segment)
    n = prepared.program.num_qubits
    dim = 1 << n
    prefixes = data.prefixes
    parts = []
    if single:
        count = len(single)
        blocks = prefixes.reshape(-1, dim).index_select(0, flat)  # rows of qubit value 0, 1
        side = blocks.view(count, 2, dim // 2, dim).transpose(1, 2).reshape(count, dim // 2, -1)
        gram = side.mH @ side  # [B_0 | B_1]^dagger [B_0 | B_1]: (J1, 2D, 2D)
        products = gram.view(count, 2, dim, 2, dim).transpose(2, 3).reshape(count, 4, dim * dim)
        gens = [data.generators[k] for k in single]  # (A, 2, 2) each
        if len({g.shape[0] for g in gens}) == 1:  # one product per gate for all its angles
            local = torch.stack(gens).reshape(count, -1, 4)
            parts.append((local @ products).view(-1, dim, dim))
        else:
            local = torch.cat(gens).reshape(-1, 1, 4)
            parts.append((local @ products[single_owner]).view(-1, dim, dim))
    if other:
        qubits = [prepared.ops[segment.ops[segment.params[k]]].qubits for k in other]
        gens = torch.cat(
            [
                embed(data.generators[k][:, None], [q], n)[:, 0]
                for k, q in zip(other, qubits, strict=True)
            ]
        )  # (S2, D, D)
        left = prefixes[other_owner]
        parts.append(left.mH @ gens @ left)
    return (parts[0] if len(parts) == 1 else torch.cat(parts)), order


def _run_generators(prepared: PreparedProgram, segment: Segment, run: int):
    """The whole-register generators of a commuting run's gates side by side, ``(D, S D)``
    (``wide[b, (s, a)] = Gen_s[a, b]``), and their slots (cached; ``None`` without gates)."""
    key = ("segment-run", segment, run)
    hit = prepared.memo.get(key)
    if hit is not None:
        return hit
    begin, end, _ = segment.runs[run]
    n = prepared.program.num_qubits
    parts, slots = [], []
    for position in range(begin, end):
        i = segment.ops[position]
        gens = prepared.constant_generators.get(i)
        if gens is None or not prepared.ops[i].slots:
            continue
        parts.append(embed(gens[:, None], [prepared.ops[i].qubits], n)[:, 0])  # (A, D, D)
        slots.extend(prepared.ops[i].slots)
    wide = None
    if parts:
        stacked = torch.cat(parts)
        wide = stacked.permute(2, 0, 1).reshape(1 << n, len(slots) * (1 << n))
    hit = (wide, tuple(slots))
    prepared.memo[key] = hit
    return hit


def _run_real_wide(prepared: PreparedProgram, segment: Segment, run: int, real_ket: bool):
    """:func:`_real_wide` of a commuting run's generators (cached)."""
    key = ("segment-run-real", segment, run, real_ket)
    hit = prepared.memo.get(key)
    if hit is None:
        wide, slots = _run_generators(prepared, segment, run)
        dim = wide.shape[0]
        stacked = wide.reshape(dim, len(slots), dim).permute(1, 2, 0)  # (S, a, b)
        hit = prepared.memo[key] = _real_wide(stacked, real_ket)
    return hit


def _real_wide(generators: torch.Tensor, real_ket: bool) -> torch.Tensor:
    """Whole-register ``generators (S, D, D)`` as one real matrix taking a ket's ``[Re, Im]``
    entries (``(D, ...)``: only its real part, for a real ket) to the ``[Re, Im]`` parts of all
    its images, columns ordered ``(a, part, s)``: the image GEMM then gives ``(R, 2D, S)``,
    the layout of the overlap product (contiguous, no transposed operand)."""
    dim = generators.shape[-1]
    real = torch.view_as_real(generators.resolve_conj()).permute(2, 1, 3, 0)  # (b, a, part, s)
    if real_ket:
        return real.reshape(dim, -1)
    imag = torch.view_as_real(1j * generators.resolve_conj()).permute(2, 1, 3, 0)  # i Im(ket)
    return torch.stack([real, imag], dim=1).reshape(2 * dim, -1)


def _real_terms(bras: torch.Tensor, ket: torch.Tensor, wide: torch.Tensor, real_ket: bool):
    """``Re <bras[r, k]| G_s |ket_r>`` ``(R, M, S)`` for ``wide = _real_wide(G, real_ket)``:
    one real GEMM for the images (half the work of a complex one for a real ket, e.g. after an
    RY encoding) and one batched real product; ``ket`` may have one row for all."""
    x = ket.real if real_ket else torch.view_as_real(ket.resolve_conj()).flatten(-2)
    images = (x @ wide).view(x.shape[0], bras.shape[-1] * 2, -1)  # (R', 2D, S)
    left = torch.view_as_real(bras.resolve_conj()).flatten(-2)  # (R, M, 2D)
    if images.shape[0] == 1 and left.shape[0] != 1:
        rows, width = left.shape[0], left.shape[1]
        return (left.reshape(rows * width, -1) @ images[0]).view(rows, width, -1)
    return left @ images


def _overlaps(bras: torch.Tensor, images: torch.Tensor, real_only: bool) -> torch.Tensor:
    """``t[r, k, s] = sum_a conj(bras[r, k, a]) images[r, s, a]`` (its real part if asked);
    ``images`` may have one row for all."""
    if not real_only:
        return bras.conj() @ images.mT
    # Re(conj(x) y) = Re x Re y + Im x Im y: one real GEMM over [Re, Im] pairs
    left = torch.view_as_real(bras.resolve_conj()).flatten(-2)
    right = torch.view_as_real(images.resolve_conj()).flatten(-2)
    return left @ right.mT


def gradient_terms(
    prepared: PreparedProgram,
    tensors: SegmentTensors,
    bras: torch.Tensor,
    needed: set[int],
    start: int,
    stop: int,
    real_only: bool,
):
    """``<bra| Gen_s |ket>`` terms ``(R, M, S_used)`` of rows ``start:stop`` (``bras``: their
    ``(R, M, D)`` co-states after the circuit) and their angle slots, as
    :func:`.sweep.gradient_terms` returns them."""
    terms, slots, _, _ = gradient_terms_summed(
        prepared, tensors, bras, needed, start, stop, real_only, frozenset()
    )
    return terms, slots


def gradient_terms_summed(
    prepared: PreparedProgram,
    tensors: SegmentTensors,
    bras: torch.Tensor,
    needed: set[int],
    start: int,
    stop: int,
    real_only: bool,
    summed: frozenset[int],
):
    """:func:`gradient_terms`, except that a shared segment whose parameterized ops are all in
    ``summed`` (gates whose terms are only needed summed over the rows: the weight gradient of
    :class:`~.torch_layer.ExactTorchLayer`) gives its terms summed over the rows, ``(M, S')``,
    from ``X_k = sum_r |phi_r><lambda_rk|`` (one GEMM over the rows) contracted with the
    conjugated generators: no per-row images. Returns ``terms, slots, totals, total_slots``
    (``totals`` ``None`` when there are none)."""
    totals, total_slots = [], []
    if not needed:
        return None, [], None, []
    earliest = min(needed)
    n = prepared.program.num_qubits
    dim = 1 << n
    lam = bras
    terms, slots = [], []
    for segment, data in zip(reversed(tensors.plan.segments), reversed(tensors.data), strict=True):
        if segment.ops[-1] < earliest:
            break
        if isinstance(data, SharedData):
            lam = lam @ data.total.conj()  # the co-states before the segment
            if data.prefixes is not None and any(segment.ops[p] in needed for p in segment.params):
                conjugated, segment_slots = _conjugated_generators(prepared, segment, data)
                count = conjugated.shape[0]
                phi = _rows(data.state_in, start, stop, 2)
                if summed and all(segment.ops[p] in summed for p in segment.params):
                    rows, width = lam.shape[0], lam.shape[1]
                    if phi.shape[0] != rows:
                        phi = phi.expand(rows, dim)
                    # outer[k, a, b] = sum_r conj(lam[r, k, a]) phi[r, b]
                    outer = lam.conj().permute(1, 2, 0).reshape(width * dim, rows) @ phi
                    total = outer.view(width, dim * dim) @ conjugated.reshape(count, -1).T
                    totals.append(total.real if real_only else total)  # (M, S')
                    total_slots.extend(segment_slots)
                    continue
                if real_only:
                    real_ket = data.state_real
                    terms.append(_real_terms(lam, phi, _real_wide(conjugated, real_ket), real_ket))
                else:
                    wide = conjugated.permute(2, 0, 1).reshape(dim, count * dim)
                    images = (phi @ wide).view(phi.shape[0], count, dim)
                    terms.append(_overlaps(lam, images, real_only))
                slots.extend(segment_slots)
            continue
        params = dict(zip(segment.params, range(len(segment.params)), strict=True))
        for run in range(len(segment.runs) - 1, -1, -1):
            begin, end, commuting = segment.runs[run]
            if segment.ops[end - 1] < earliest:
                break
            if commuting:  # every term of the run at its end, in one product
                wide, run_slots = _run_generators(prepared, segment, run)
                if wide is not None:
                    phi = _rows(data.after[run], start, stop, 2)
                    if real_only:
                        real_ket = data.after_real[run]
                        real_wide = _run_real_wide(prepared, segment, run, real_ket)
                        terms.append(_real_terms(lam, phi, real_wide, real_ket))
                    else:
                        images = (phi @ wide).view(phi.shape[0], len(run_slots), dim)
                        terms.append(_overlaps(lam, images, real_only))
                    slots.extend(run_slots)
                if segment.ops[begin] <= earliest:  # nothing before the run needs a term
                    break
            for position in range(end - 1, begin - 1, -1):
                i = segment.ops[position]
                if i < earliest:
                    break
                matrix = _rows(data.matrices[position], start, stop, 3)
                adjoint = matrix.conj().transpose(-1, -2)
                lam = apply_local(lam, adjoint, data.spaces[position], n)  # before gate i
                k = params.get(position)
                if commuting or k is None or i not in needed:
                    continue
                phi = _rows(data.before[k], start, stop, 2)  # (R or 1, D)
                gens = _rows(data.generators[k], start, stop, 4)  # (A, m, m) or (R, A, m, m)
                if gens.dim() == 4 and phi.shape[0] != gens.shape[0]:
                    phi = phi.expand(gens.shape[0], dim)
                images = apply_generators_local(phi, gens, data.spaces[position], n)
                terms.append(_overlaps(lam, images, real_only))
                slots.extend(prepared.ops[i].slots)
    total = None
    if totals:
        total = totals[0] if len(totals) == 1 else torch.cat(totals, dim=-1)
    if not terms:
        return None, [], total, total_slots
    return torch.cat(terms, dim=-1), slots, total, total_slots
