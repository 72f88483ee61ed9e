"""Parameter-shift gradients that send a whole batch to the estimator as ONE broadcast PUB.

qiskit-machine-learning's ``ParamShiftEstimatorGradient`` sends one scalar PUB per shifted
parameter set (Aer: one ``run`` — and one noise-model serialisation — each). Here every shifted
set of every sample goes into a single PUB ``(circuit, observables[K, 1], values[R])``, so the
estimator runs once per backward pass and evaluates all K observables on each state.

The rule, for ISA circuits where a parameter θ appears inside gate angles such as
``RZ(a·θ + b)``: every parameterized gate occurrence k gets its own angle g_k (qiskit-ml's
``_assign_unique_parameters``), the angles are an affine map g = A·θ + c of the circuit
parameters, ∂f/∂g_k = [f(g + π/2·e_k) − f(g − π/2·e_k)] / 2 for Pauli rotations (exact, also
under noise that does not depend on the angle), and ∂f/∂θ = Σ_k A_kθ ∂f/∂g_k. Gates that are not
Pauli rotations are first translated with ``TranslateParameterizedGates`` like qiskit-ml does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from qiskit.circuit import Parameter, ParameterExpression, QuantumCircuit
from qiskit.primitives import BaseEstimatorV2
from qiskit.providers import Options
from qiskit.quantum_info import SparsePauliOp
from qiskit.transpiler.passes import TranslateParameterizedGates
from qiskit_machine_learning.gradients import (
    BaseEstimatorGradient,
    EstimatorGradientResult,
    ParamShiftEstimatorGradient,
)

from qhqcnn import _compat
from qhqcnn.engine.batching import index_by_identity
from qhqcnn.errors import BackendError


@dataclass(frozen=True)
class ShiftProgram:
    """The unique-angle circuit of a circuit and the affine map g = A·θ + c to its angles."""

    circuit: QuantumCircuit  # one parameter per gate angle
    jacobian: np.ndarray  # A, (num_angles, num_parameters), in ``circuit.parameters`` orders
    offset: np.ndarray  # c, (num_angles,)


def _constant(value) -> float:
    if isinstance(value, ParameterExpression):
        if value.parameters:
            raise BackendError(
                f"gate angle is not affine in the circuit parameters (d/dθ = {value}); "
                "use qiskit-ml's ParamShiftEstimatorGradient for such circuits"
            )
        value = complex(value)
    value = complex(value)
    if abs(value.imag) > 1e-12:
        raise BackendError(f"complex gate angle coefficient {value}")
    return value.real


def shift_program(circuit: QuantumCircuit) -> ShiftProgram:
    """Build the unique-angle circuit and its affine angle map (raises if not affine)."""
    translated = TranslateParameterizedGates(ParamShiftEstimatorGradient.SUPPORTED_GATES)(circuit)
    unique = _compat.assign_unique_parameters(translated)
    g_circuit = unique.gradient_circuit
    g_circuit.global_phase = 0.0  # no expectation value depends on it
    params: list[Parameter] = list(circuit.parameters)
    angles: list[Parameter] = list(g_circuit.parameters)
    jacobian = np.zeros((len(angles), len(params)))
    offset = np.zeros(len(angles))
    zero = dict.fromkeys(params, 0.0)
    for k, angle in enumerate(angles):
        expr = unique.gradient_parameter_map[angle]
        if isinstance(expr, ParameterExpression):
            for j, p in enumerate(params):
                if p in expr.parameters:
                    jacobian[k, j] = _constant(expr.gradient(p))
            offset[k] = _constant(expr.bind({p: zero[p] for p in expr.parameters}))
        else:
            offset[k] = _constant(expr)
    return ShiftProgram(g_circuit, jacobian, offset)


class BroadcastParamShiftGradient(BaseEstimatorGradient):
    """Exact parameter-shift gradients, all shifted sets of a call in one broadcast PUB."""

    def __init__(self, estimator: BaseEstimatorV2, options: Options | None = None) -> None:
        if not isinstance(estimator, BaseEstimatorV2):
            raise BackendError("BroadcastParamShiftGradient needs a V2 estimator")
        super().__init__(estimator, options=options)
        self._programs: dict[int, tuple[QuantumCircuit, ShiftProgram]] = {}

    def program(self, circuit: QuantumCircuit) -> ShiftProgram:
        """The cached shift program of ``circuit`` (keyed by identity: QNNs reuse one object)."""
        entry = self._programs.get(id(circuit))
        if entry is None or entry[0] is not circuit:
            entry = (circuit, shift_program(circuit))
            self._programs[id(circuit)] = entry
        return entry[1]

    def _run(
        self,
        circuits: Sequence[QuantumCircuit],
        observables: Sequence[SparsePauliOp],
        parameter_values: Sequence[Sequence[float]] | np.ndarray,
        parameters: Sequence[Sequence[Parameter]],
        **options,
    ) -> EstimatorGradientResult:
        gradients: list[np.ndarray | None] = [None] * len(circuits)
        distinct, circuit_of = index_by_identity(circuits)
        for k in range(len(distinct)):
            members = np.flatnonzero(circuit_of == k).tolist()
            self._run_group(members, circuits, observables, parameter_values, parameters, gradients)
        metadata = [{"parameters": p} for p in parameters]
        return EstimatorGradientResult(
            gradients=gradients, metadata=metadata, options=Options(**options)
        )

    def _run_group(self, members, circuits, observables, parameter_values, parameters, out):
        circuit = circuits[members[0]]
        program = self.program(circuit)
        index = {p: j for j, p in enumerate(circuit.parameters)}
        # Distinct observables (rows of the PUB) and distinct shift blocks (columns).
        obs_rows: dict[tuple, int] = {}
        obs_list: list[SparsePauliOp] = []
        blocks: dict[tuple, tuple[int, np.ndarray, np.ndarray]] = {}
        columns: list[np.ndarray] = []
        n_columns = 0
        plan = []
        row_of_object: dict[int, int] = {}  # QNNs repeat the same observable objects
        for i in members:
            row = row_of_object.get(id(observables[i]))
            if row is None:
                obs = SparsePauliOp(observables[i])
                key = (tuple(obs.paulis.to_labels()), obs.coeffs.tobytes())
                if key not in obs_rows:
                    obs_rows[key] = len(obs_list)
                    obs_list.append(obs)
                row = row_of_object[id(observables[i])] = obs_rows[key]
            theta = np.asarray(parameter_values[i], dtype=float)
            cols = np.array([index[p] for p in parameters[i]], dtype=int)
            block_key = (theta.tobytes(), cols.tobytes())
            if block_key not in blocks:
                jac = program.jacobian[:, cols]
                shifted = np.flatnonzero(np.any(jac != 0.0, axis=1))
                angles = program.jacobian @ theta + program.offset
                sets = np.repeat(angles[None, :], 2 * len(shifted), axis=0)
                sets[np.arange(len(shifted)), shifted] += np.pi / 2
                sets[len(shifted) + np.arange(len(shifted)), shifted] -= np.pi / 2
                blocks[block_key] = (n_columns, shifted, jac)
                columns.append(sets)
                n_columns += len(sets)
            plan.append((i, row, blocks[block_key]))
        if n_columns == 0:  # nothing to differentiate
            for i, _, (_, _, jac) in plan:
                out[i] = np.zeros(jac.shape[1])
            return
        values = np.concatenate(columns)
        observables_array = [[obs] for obs in obs_list]
        result = self._estimator.run([(program.circuit, observables_array, values)]).result()
        evs = np.asarray(result[0].data.evs).reshape(len(obs_list), n_columns)
        for i, row, (start, shifted, jac) in plan:
            n = len(shifted)
            plus = evs[row, start : start + n]
            minus = evs[row, start + n : start + 2 * n]
            out[i] = ((plus - minus) / 2.0) @ jac[shifted]
