"""``ExactTorchLayer``: the exact engine as a native ``torch.nn.Module`` (vector-Jacobian products).

``EstimatorQNN`` + ``TorchConnector`` asks the gradient primitive for the full Jacobian
``(B, M, P)``: every observable's gradient for every sample, which costs one adjoint sweep of
``M`` co-states per sample, then contracts it with the upstream gradient in NumPy. This layer
is a ``torch.autograd.Function`` instead: its backward receives the upstream gradient ``g (B, M)``
and sweeps the single co-state ``sum_k g[b, k] O_k |psi_b>`` back through the circuit, so a
backward pass costs about one forward pass whatever the number of observables. It uses the same
compiled program, gate blocks and adjoint sweep as :class:`~qhqcnn.engine.FastEstimator`; its
values and gradients equal the ``EstimatorQNN`` path's (to float rounding).

Device: the statevectors, co-states and gradients live on ``device`` (CUDA included). Off the
CPU the gate angles and few-qubit gate matrices are built with torch ops on ``device`` from the
input and weight tensors (``gate_backend="torch"``, block path only); on the CPU (and on the
segment path) they are evaluated in NumPy and copied once per step.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from qiskit.circuit import Parameter, QuantumCircuit

from . import small, sweep, torch_gates
from .compile import compile_circuit
from .observables import expectation_values, pauli_sum, weighted_image
from .small import DEFAULT_SMALL_MAX_QUBITS
from .statevector import DEFAULT_DENSE_MAX_QUBITS, StatevectorSimulator, _needed_ops
from .tensors import GateTensors, gate_tensors

#: Rows simulated together (bounded so that a chunk's states stay below this many bytes).
CHUNK_BYTES = 1 << 28
#: The kept forward states of a step go back to a pool of the layer after its backward pass and
#: are reused by the next step (fresh memory costs a page fault per 4 KiB on every step, ~20% of
#: a 12-qubit step); the pool holds at most this many bytes between steps.
POOL_BYTES = 1 << 30


class _QuantumFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, inputs: torch.Tensor, weights: torch.Tensor, layer: ExactTorchLayer):
        values, traces = layer._forward(inputs.detach(), weights.detach())
        ctx.layer, ctx.traces = layer, traces
        ctx.input_shape = inputs.shape
        return values.to(inputs.dtype if inputs.is_floating_point() else torch.float64)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        layer = ctx.layer
        need_inputs, need_weights = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if not (need_inputs or need_weights):
            return None, None, None
        grads, summed = layer._vjp(ctx.traces, grad_output)  # (B, P), (P,)
        layer._release(ctx.traces)
        ctx.traces = None
        input_grad = weight_grad = None
        if need_inputs:
            input_grad = grads[:, layer._input_cols].reshape(ctx.input_shape)
            input_grad = input_grad.to(grad_output.dtype)
        if need_weights:
            weight_grad = grads[:, layer._weight_cols].sum(0) + summed[layer._weight_cols]
            weight_grad = weight_grad.to(layer.weight.dtype)
        return input_grad, weight_grad, None


class ExactTorchLayer(torch.nn.Module):
    """``(B, len(input_params))`` inputs -> ``(B, len(observables))`` exact expectation values.

    Args:
        circuit: the parameterized circuit (unitary, no measurements).
        observables: anything ``EstimatorQNN`` accepts as observables (Pauli sums).
        input_params: the circuit parameters fed from the input tensor, in column order.
        weight_params: the trainable circuit parameters (the layer's ``weight``).
        initial_weights: initial values of ``weight`` (default: uniform in ``[-1, 1)``).
        device, dtype: where and in which precision the statevectors live
            (``torch.complex128`` default; ``torch.complex64`` is faster, values and
            gradients accurate to ~1e-6).
        dense_max_qubits: circuits up to this width use the dense layout.
        small_max_qubits: circuits up to this width (and ``dense_max_qubits``) run on the
            segment path (:mod:`qhqcnn.engine.small`); ``0`` keeps them on the block path.
        gate_backend: ``"numpy"`` evaluates the angles and builds the gate matrices on the host
            and copies them; ``"torch"`` builds them with torch ops on ``device`` from the input
            and weight tensors (no host round trip in a step); ``"auto"`` (default): torch off
            the CPU, NumPy on the CPU. The torch backend covers the block path (more than
            ``small_max_qubits`` qubits), affine angles and the gates of
            :mod:`qhqcnn.engine.torch_gates`; other circuits use NumPy whatever is asked.
    """

    def __init__(
        self,
        circuit: QuantumCircuit,
        observables: Sequence,
        input_params: Sequence[Parameter],
        weight_params: Sequence[Parameter],
        initial_weights: torch.Tensor | np.ndarray | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.complex128,
        dense_max_qubits: int = DEFAULT_DENSE_MAX_QUBITS,
        small_max_qubits: int = DEFAULT_SMALL_MAX_QUBITS,
        gate_backend: str = "auto",
    ) -> None:
        super().__init__()
        self.program = compile_circuit(circuit)
        names = {name: i for i, name in enumerate(self.program.parameter_names)}
        self._input_cols = [names[p.name] for p in input_params]
        self._weight_cols = [names[p.name] for p in weight_params]
        if sorted(self._input_cols + self._weight_cols) != list(range(len(names))):
            raise ValueError("input_params and weight_params must partition the circuit parameters")
        self.observables = [pauli_sum(obs) for obs in observables]
        self.simulator = StatevectorSimulator(
            device, dtype, dense_max_qubits, trace_cache=None, small_max_qubits=small_max_qubits
        )
        self.prepared = self.simulator.prepare(self.program)
        self._summable: dict[frozenset, frozenset[int]] = {}
        if gate_backend not in ("auto", "numpy", "torch"):
            raise ValueError("gate_backend must be 'auto', 'numpy' or 'torch'")
        if gate_backend == "auto":
            gate_backend = "numpy" if self.simulator.device.type == "cpu" else "torch"
        self.gate_backend = gate_backend if self._torch_gates_apply() else "numpy"
        if initial_weights is None:
            generator = torch.Generator().manual_seed(0)
            initial_weights = torch.rand(len(self._weight_cols), generator=generator) * 2 - 1
        weight = torch.as_tensor(np.asarray(initial_weights), dtype=torch.float64)
        self.weight = torch.nn.Parameter(weight.clone().to(self.simulator.device))
        self._pool = sweep.StatePool(self.simulator.dtype, self.simulator.device, POOL_BYTES)

    def _release(self, traces) -> None:
        """Return the kept states of finished traces to the pool."""
        for trace in traces:
            for state in trace.states or ():
                if state is not None and state.shape[0] > 1 and state.is_contiguous():
                    self._pool.give(state.view(state.shape[0], 1, state.shape[1]))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return _QuantumFunction.apply(inputs, self.weight, self)

    # ------------------------------------------------------------------ engine calls
    def _torch_gates_apply(self) -> bool:
        """Whether the torch gate backend covers this circuit (see ``gate_backend``)."""
        program, prepared = self.program, self.prepared
        if program.angle_map.nonlinear or self.simulator._uses_segments(prepared):
            return False
        return all(torch_gates.supported(program.ops[i].model) for i in prepared.param_ops)

    def _torch_forward(self, inputs: torch.Tensor, weights: torch.Tensor):
        """Angles, gates and states on the device: per-row ops are those whose angles depend on
        an input column (decided from the circuit, not from the batch's values)."""
        prepared, device = self.prepared, self.simulator.device
        memo = prepared.memo.get(("torch-layer", tuple(self._input_cols)))
        if memo is None:
            angle_map = self.program.angle_map
            depends = np.append((angle_map.linear[:, self._input_cols] != 0).any(axis=1), False)
            op_varies = depends[prepared.slot_table].any(axis=1)
            offset = torch.as_tensor(angle_map.offset, device=device, dtype=torch.float64)
            memo = prepared.memo[("torch-layer", tuple(self._input_cols))] = (op_varies, offset)
        op_varies, offset = memo
        inputs = inputs.reshape(-1, len(self._input_cols)).to(device, torch.float64)
        rows = inputs.new_empty((inputs.shape[0], self.program.num_parameters))
        rows[:, self._input_cols] = inputs
        rows[:, self._weight_cols] = weights.to(device, torch.float64)
        values, traces = [], []
        for start, stop in self._chunks(rows.shape[0]):
            angles = torch.addmm(offset, rows[start:stop], prepared.linear.T)
            tensors = gate_tensors(prepared, angles, op_varies)
            trace = self.simulator._block_trace(prepared, rows[start:stop], tensors)
            values.append(expectation_values(trace.psi, self.observables))
            traces.append(trace)
        return torch.cat(values).to(torch.float64), traces

    def _rows(self, inputs: torch.Tensor, weights: torch.Tensor) -> np.ndarray:
        inputs = inputs.reshape(-1, len(self._input_cols))
        rows = np.empty((inputs.shape[0], self.program.num_parameters))
        rows[:, self._input_cols] = inputs.cpu().numpy()
        rows[:, self._weight_cols] = weights.cpu().numpy()
        return rows

    def _chunks(self, count: int) -> list[tuple[int, int]]:
        itemsize = torch.empty((), dtype=self.simulator.dtype).element_size()
        per_row = (len(self.observables) + 2) * (1 << self.program.num_qubits) * itemsize
        size = max(1, min(count, CHUNK_BYTES // per_row))
        return [(s, min(s + size, count)) for s in range(0, count, size)]

    def _forward(self, inputs: torch.Tensor, weights: torch.Tensor):
        if self.gate_backend == "torch":
            return self._torch_forward(inputs, weights)
        rows = self._rows(inputs, weights)
        values, traces = [], []
        for start, stop in self._chunks(rows.shape[0]):
            trace = self.simulator._forward(self.prepared, rows[start:stop], self._pool)
            values.append(expectation_values(trace.psi, self.observables))
            traces.append(trace)
        return torch.cat(values).to(torch.float64), traces

    def _weight_only_ops(self, per_row) -> frozenset[int]:
        """Shared parameterized ops whose angles are affine in the weights only: their gradient
        terms are only needed summed over the rows (the weight gradient), so the fused sweep
        sums their transition matrices over the rows in one GEMM per block."""
        key = frozenset(per_row)
        hit = self._summable.get(key)
        if hit is None:
            dependency = self.program.angle_map.linear[:, self._input_cols] != 0  # (S, inputs)
            nonlinear = {item.slot for item in self.program.angle_map.nonlinear}
            ops = self.program.ops
            hit = frozenset(
                i
                for i in self.prepared.param_ops
                if i not in key
                and not any(s in nonlinear or dependency[s].any() for s in ops[i].slots)
            )
            self._summable[key] = hit
        return hit

    def _vjp(self, traces, grad_output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``sum_k g[b, k] d<O_k>_b / d theta_b`` as per-row ``(B, P)`` plus row-summed ``(P,)``
        parts (their sum over rows is the weight gradient), on the simulator's device."""
        prepared = self.prepared
        grad_output = grad_output.reshape(-1, len(self.observables)).to(self.simulator.device)
        needed = _needed_ops(prepared, None)
        num_parameters = self.program.num_parameters
        out, offset = [], 0
        summed = torch.zeros(num_parameters, dtype=torch.float64, device=self.simulator.device)
        for trace in traces:
            count = trace.rows.shape[0]
            g = grad_output[offset : offset + count].to(prepared.dtype)
            offset += count
            psi = trace.psi
            bra = weighted_image(psi, self.observables, g)[:, None]  # one co-state per row
            if prepared.fused and isinstance(trace.tensors, GateTensors):
                terms, slots, totals, total_slots = sweep._fused_gradient_terms(
                    prepared,
                    trace.tensors,
                    trace.blocks,
                    trace.states,
                    psi,
                    bra,
                    needed,
                    0,
                    count,
                    True,
                    self._weight_only_ops(trace.tensors.per_row),
                    self._pool,
                )
            elif isinstance(trace.tensors, small.SegmentTensors):  # weight gates row-summed
                per_row = {
                    segment.ops[p]
                    for segment in trace.tensors.plan.segments
                    if segment.per_row
                    for p in segment.params
                }
                terms, slots, totals, total_slots = small.gradient_terms_summed(
                    prepared,
                    trace.tensors,
                    bra,
                    needed,
                    0,
                    count,
                    True,
                    self._weight_only_ops(per_row),
                )
            else:
                terms, slots = self.simulator.gradient_terms(
                    prepared, trace, psi, bra, needed, 0, count, True
                )
                totals = None
            if totals is not None:  # row-summed weight terms
                totals = totals[0].to(torch.float64)  # (S',)
                summed = summed + 2 * totals @ prepared.linear[total_slots]
            grads = torch.zeros((count, num_parameters), dtype=torch.float64, device=psi.device)
            if terms is not None:
                terms = terms[:, 0].to(torch.float64)  # (R, S_used)
                grads = 2 * terms @ prepared.linear[slots]
                angle_map = self.program.angle_map
                if angle_map.nonlinear:
                    column = {s: c for c, s in enumerate(slots)}
                    extra = np.zeros((count, num_parameters))
                    host = terms.cpu().numpy()
                    for item in angle_map.nonlinear:
                        if item.slot in column:
                            jac = item.jacobian(trace.rows)  # (R, k)
                            extra[:, list(item.parameter_indices)] += (
                                2 * host[:, column[item.slot], None] * jac
                            )
                    grads = grads + torch.as_tensor(extra, device=grads.device)
            out.append(grads)
        return torch.cat(out), summed
