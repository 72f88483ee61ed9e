"""Vectorized statevector simulation of a :class:`Program` with adjoint-mode gradients.

All parameter rows of a batch are simulated together in torch. Expectation values are
``Re <psi_r| O_k |psi_r>``. Gradients are exact reverse-mode (adjoint) derivatives: one sweep
yields every observable's gradient with respect to every gate angle, for every row, at the cost
of about two forward simulations; the chain rule through the angle map then gives parameter
gradients. Gates are applied in blocks (:mod:`.sweep`): few-qubit programs use the *dense*
layout (blocks span the whole register), larger ones the *local* layout (small blocks). Dense
programs up to ``small_max_qubits`` (5 by default) run on the *segment* path instead
(:mod:`.small`: prefix products of whole-register matrices, few torch calls per batch). The
forward states of the last batches are cached so that a gradient request right after a forward
pass with the same rows (``TorchConnector``) does not simulate again.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass

import numpy as np
import torch

from . import small, sweep
from .contraction import inner, to_numpy
from .observables import PauliSum, apply_observables
from .program import Program
from .tensors import PreparedProgram, gate_tensors, prepare
from .trace_cache import ForwardTrace, TraceCache

#: Programs with at most this many qubits use full 2**n x 2**n gate matrices.
DEFAULT_DENSE_MAX_QUBITS = 5
#: Rough cap on the working memory of one gradient chunk (rows are processed in chunks).
DEFAULT_MEMORY_BUDGET = 1 << 29
#: The forward states after every block are kept for the adjoint sweep up to this many bytes
#: (beyond it the sweep undoes the blocks on the state instead).
DEFAULT_KEEP_STATES_BYTES = 1 << 28

#: Prepared programs shared by all simulators: program -> {(dense, device, dtype): prepared}.
_PREPARED: weakref.WeakKeyDictionary[Program, dict] = weakref.WeakKeyDictionary()
_PREPARED_LOCK = threading.Lock()


@dataclass(frozen=True)
class SweepResult:
    """Expectation values ``(R, M)`` and, if requested, gradients ``(R, M, P)``: the real
    derivatives, or the complex ``2 <psi|O|d psi>`` when ``real_only=False``."""

    values: np.ndarray
    gradients: np.ndarray | None


class StatevectorSimulator:
    """Batched statevector simulator for compiled programs on one torch device/dtype.

    ``small_max_qubits``: dense-layout programs up to this width run on the segment path
    (:mod:`.small`); ``0`` keeps every dense program on the block path.
    """

    def __init__(
        self,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.complex128,
        dense_max_qubits: int = DEFAULT_DENSE_MAX_QUBITS,
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        trace_cache: TraceCache | None = None,
        fusion: bool = True,
        keep_states_bytes: int = DEFAULT_KEEP_STATES_BYTES,
        small_max_qubits: int = small.DEFAULT_SMALL_MAX_QUBITS,
    ) -> None:
        if dtype not in (torch.complex64, torch.complex128):
            raise ValueError("dtype must be torch.complex64 or torch.complex128")
        self.device = torch.device(device)
        self.dtype = dtype
        self.dense_max_qubits = dense_max_qubits
        self.memory_budget = memory_budget
        self.trace_cache = trace_cache
        self.fusion = fusion
        self.keep_states_bytes = keep_states_bytes
        self.small_max_qubits = small_max_qubits

    def prepare(self, program: Program) -> PreparedProgram:
        """The program's constant tensors for this configuration (cached per program)."""
        dense_layout = program.num_qubits <= self.dense_max_qubits
        fused = self.fusion and not dense_layout
        key = (dense_layout, fused, self.device, self.dtype)
        with _PREPARED_LOCK:
            hit = _PREPARED.setdefault(program, {}).get(key)
        if hit is not None:
            return hit
        prepared = prepare(program, dense_layout, self.device, self.dtype, fused)
        with _PREPARED_LOCK:
            return _PREPARED[program].setdefault(key, prepared)

    def _forward(self, prepared: PreparedProgram, rows: np.ndarray, allocate=None) -> ForwardTrace:
        key = (prepared, self._uses_segments(prepared))
        if self.trace_cache is not None:
            hit = self.trace_cache.lookup(key, rows)
            if hit is not None:
                return hit
        angles = prepared.program.angle_map.evaluate(rows)
        if key[1]:
            varies = small.op_varies(prepared, angles)
            if small.fits(prepared, varies, rows.shape[0]):
                psi, segments = small.forward(prepared, angles, varies)
                trace = ForwardTrace(rows, segments, psi, ())
                if self.trace_cache is not None:
                    self.trace_cache.store(key, trace)
                return trace
        trace = self._block_trace(prepared, rows, gate_tensors(prepared, angles), allocate)
        if self.trace_cache is not None:
            self.trace_cache.store(key, trace)
        return trace

    def _block_trace(self, prepared: PreparedProgram, rows, tensors, allocate=None):
        """Forward pass of the block path (dense or local layout) for built gate tensors
        (``allocate``: where kept states go, see :func:`.sweep.forward`)."""
        blocks = sweep.build_blocks(prepared, tensors)
        itemsize = torch.empty((), dtype=self.dtype).element_size()
        size = rows.shape[0] * (1 << prepared.program.num_qubits) * itemsize * len(blocks)
        keep = prepared.fused and size <= self.keep_states_bytes
        states = None
        if keep:
            psi, states = sweep.forward(prepared, blocks, rows.shape[0], True, allocate)
        else:
            psi = sweep.forward(prepared, blocks, rows.shape[0])
        return ForwardTrace(rows, tensors, psi, blocks, states)

    def _uses_segments(self, prepared: PreparedProgram) -> bool:
        """Whether this simulator runs ``prepared`` on the segment path (:mod:`.small`)."""
        return prepared.dense and prepared.program.num_qubits <= self.small_max_qubits

    def gradient_terms(
        self,
        prepared: PreparedProgram,
        trace: ForwardTrace,
        psi: torch.Tensor,
        bras: torch.Tensor,
        needed: set[int],
        start: int,
        stop: int,
        real_only: bool,
    ):
        """Adjoint terms ``(R, M, S_used)`` and their slots for rows ``start:stop`` of a trace
        (``psi``, ``bras``: those rows' states and co-states), on the trace's own path."""
        if isinstance(trace.tensors, small.SegmentTensors):
            return small.gradient_terms(
                prepared, trace.tensors, bras, needed, start, stop, real_only
            )
        return sweep.gradient_terms(
            prepared,
            trace.tensors,
            trace.blocks,
            psi,
            bras,
            needed,
            start,
            stop,
            real_only,
            trace.states,
        )

    def states(self, program: Program, rows: np.ndarray) -> torch.Tensor:
        """Final statevectors ``(R, 2**n)`` including the circuit's global phase."""
        rows = _as_rows(rows, program)
        trace = self._forward(self.prepare(program), rows)
        psi = trace.psi
        if program.global_phase_slot is not None:
            phase = np.exp(1j * trace.tensors.angles[:, program.global_phase_slot])
            psi = psi * torch.as_tensor(phase, device=self.device).to(self.dtype)[:, None]
        return psi

    def run(
        self,
        program: Program,
        rows: np.ndarray,
        observables: list[PauliSum],
        pairs: np.ndarray | None,
        gradient: bool = False,
        slot_mask: np.ndarray | None = None,
        real_only: bool = True,
        with_values: bool = True,
    ) -> SweepResult:
        """Values (and parameter gradients) for every row and its observables.

        ``pairs`` ``(R, M)`` picks observable indices per row (``-1`` = padding, value 0); ``None``
        means all observables for every row. ``slot_mask`` limits gradients to some angles.
        ``with_values=False`` (with ``gradient``) skips the values (left uninitialized).
        """
        rows = _as_rows(rows, program)
        prepared = self.prepare(program)
        trace = self._forward(prepared, rows)
        width = len(observables) if pairs is None else pairs.shape[1]
        values = np.empty((rows.shape[0], width))
        grads = None
        if gradient:
            grad_dtype = np.float64 if real_only else np.complex128
            grads = np.zeros((rows.shape[0], width, program.num_parameters), grad_dtype)
        needed = _needed_ops(prepared, slot_mask)
        for start, stop in self._chunks(prepared, trace, width, gradient):
            psi = trace.psi[start:stop]
            chunk_pairs = None if pairs is None else pairs[start:stop]
            bras = apply_observables(psi, observables, chunk_pairs, prepared.dense)
            if with_values or not gradient:
                values[start:stop] = inner(bras, psi).real.cpu().numpy()
            if gradient and needed:
                terms, slots = self.gradient_terms(
                    prepared, trace, psi, bras, needed, start, stop, real_only
                )
                grads[start:stop] = _chain_rule(prepared, rows[start:stop], terms, slots)
        return SweepResult(values, grads)

    def _chunks(self, prepared: PreparedProgram, trace: ForwardTrace, width: int, gradient: bool):
        """Row ranges whose working set (states, bras, one block's generator images) fits."""
        rows = trace.rows.shape[0]
        dim = 1 << prepared.program.num_qubits
        itemsize = torch.empty((), dtype=self.dtype).element_size()
        per_row = (width + 1) * dim * itemsize * 4
        if gradient and isinstance(trace.tensors, small.SegmentTensors):
            angles = max((len(s.slots) for s in trace.tensors.plan.segments), default=0)
            per_row += 2 * angles * dim * itemsize
        elif gradient:
            ops = prepared.ops
            angles = max(sum(len(ops[i].slots) for i in block.ops) for block in trace.blocks)
            per_row += 2 * angles * dim * itemsize
        size = max(1, min(rows, self.memory_budget // max(per_row, 1)))
        return [(s, min(s + size, rows)) for s in range(0, rows, size)]


def _chain_rule(prepared: PreparedProgram, rows: np.ndarray, terms, slots: list[int]):
    """``2 * terms (R, M, S_used)`` over angle ``slots`` -> ``(R, M, P)`` parameter gradients."""
    if terms is None:
        return 0.0
    angle_map = prepared.program.angle_map
    key = ("chain-rule", tuple(slots), terms.dtype)
    linear = prepared.memo.get(key)
    if linear is None:  # the angle map's rows of these slots, times 2 (cached per slot order)
        linear = prepared.memo[key] = 2 * prepared.linear[list(slots)].to(terms.dtype)
    grads = to_numpy(terms @ linear)
    if angle_map.nonlinear:
        column = {s: c for c, s in enumerate(slots)}
        for item in angle_map.nonlinear:
            if item.slot in column:
                term = 2 * to_numpy(terms[..., column[item.slot]])  # (R, M)
                jac = item.jacobian(rows)  # (R, k)
                grads[..., list(item.parameter_indices)] += term[..., None] * jac[:, None]
    return grads


def _needed_ops(prepared: PreparedProgram, slot_mask: np.ndarray | None) -> set[int]:
    if slot_mask is None:
        return set(prepared.param_ops)
    return {i for i in prepared.param_ops if slot_mask[list(prepared.ops[i].slots)].any()}


def _as_rows(rows: np.ndarray, program: Program) -> np.ndarray:
    rows = np.asarray(rows, dtype=float)
    if rows.ndim == 1:
        rows = rows[None, :]
    if rows.ndim != 2 or rows.shape[1] != program.num_parameters:
        raise ValueError(
            f"expected parameter rows of shape (N, {program.num_parameters}), got {rows.shape}"
        )
    return rows
