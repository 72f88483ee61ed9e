"""``FastEstimatorGradient``: exact gradients of a whole batch by one adjoint sweep.

Implements qiskit-machine-learning's ``BaseEstimatorGradient`` contract. ``EstimatorQNN`` asks
for ``B * K`` (circuit, observable, values) rows that repeat each sample once per observable; rows
are grouped by circuit, de-duplicated, and each distinct parameter row is simulated once with one
bra per observable, so all observables' gradients for all parameters come from one sweep.
A request shaped like ``EstimatorQNN``'s (the batch tiled once per observable) is taken as it
is, without de-duplicating rows. ``run`` is overridden only to validate cheaply (the base class
spends tens of milliseconds per call on per-row checks) and to run inline; results, order and
metadata follow ``ParamShift``.
"""

from __future__ import annotations

from collections.abc import Sequence
from copy import copy

import numpy as np
from qiskit.circuit import Parameter, QuantumCircuit
from qiskit.providers import Options
from qiskit.quantum_info.operators.base_operator import BaseOperator
from qiskit.transpiler.passmanager import BasePassManager
from qiskit_machine_learning.gradients import BaseEstimatorGradient, EstimatorGradientResult
from qiskit_machine_learning.gradients.utils import DerivativeType

from .batching import index_by_identity, pair_layout, unique_rows
from .compile import compile_circuit
from .estimator import FastEstimator
from .jobs import InlineAlgorithmJob
from .observables import pauli_sum


class InlineGradient(BaseEstimatorGradient):
    """A qiskit-ml estimator gradient whose ``run`` validates each distinct circuit, observable
    and parameter list once (the base class checks every row: tens of milliseconds per
    ``EstimatorQNN`` batch) and computes inline; subclasses implement ``_run``."""

    def run(
        self,
        circuits: Sequence[QuantumCircuit],
        observables: Sequence[BaseOperator],
        parameter_values: Sequence[Sequence[float]] | np.ndarray,
        parameters: Sequence[Sequence[Parameter] | None] | None = None,
        **options,
    ) -> InlineAlgorithmJob:
        """Gradients for every ``(circuits[i], observables[i], parameter_values[i])``.

        ``parameters[i]`` (optional) selects and orders the parameters of row ``i``; the result's
        ``gradients[i][j]`` is the derivative with respect to ``parameters[i][j]``.
        """
        if isinstance(circuits, QuantumCircuit):
            circuits = (circuits,)
        if isinstance(observables, BaseOperator):
            observables = (observables,)
        if parameters is None:
            parameters = [None] * len(circuits)
        validate_gradient_arguments(circuits, observables, parameter_values, parameters)
        opts = copy(self._default_options)
        opts.update_options(**options)
        job = InlineAlgorithmJob(
            self._run, circuits, observables, parameter_values, parameters, **opts.__dict__
        )
        job.submit()
        return job


class FastEstimatorGradient(InlineGradient):
    """Reverse-mode (adjoint) gradients of expectation values, exact and batched.

    Args:
        estimator: a :class:`FastEstimator` whose device/dtype settings are used; any other
            estimator (or ``None``) means a default ``FastEstimator``.
        options: default options, stored like qiskit-machine-learning gradients do.
        derivative_type: ``REAL`` (default), ``IMAG`` or ``COMPLEX`` of ``2 <psi|O|d psi>``.
        pass_manager: accepted for interface compatibility and ignored (exact simulation of the
            logical circuit needs no transpilation).
    """

    def __init__(
        self,
        estimator: FastEstimator | None = None,
        options: Options | None = None,
        derivative_type: DerivativeType = DerivativeType.REAL,
        pass_manager: BasePassManager | None = None,
    ) -> None:
        if not isinstance(estimator, FastEstimator):
            estimator = FastEstimator()
        super().__init__(estimator, options, derivative_type, pass_manager)
        self._simulator = estimator.engine_options.simulator()

    def _run(
        self,
        circuits: Sequence[QuantumCircuit],
        observables: Sequence[BaseOperator],
        parameter_values: Sequence[Sequence[float]] | np.ndarray,
        parameters: Sequence[Sequence[Parameter] | None],
        **options,
    ) -> EstimatorGradientResult:
        gradients: list[np.ndarray] = [np.empty(0)] * len(circuits)
        metadata: list[dict] = [{}] * len(circuits)
        distinct, circuit_of = index_by_identity(circuits)
        for k, circuit in enumerate(distinct):
            indices = np.flatnonzero(circuit_of == k) if len(distinct) > 1 else None
            values = parameter_rows(parameter_values, indices)
            grads, meta = self._circuit_gradients(
                circuit, _pick(observables, indices), values, _pick(parameters, indices)
            )
            if indices is None:
                return EstimatorGradientResult(grads, meta, Options(**options))
            for i, grad, item in zip(indices, grads, meta, strict=True):
                gradients[i] = grad
                metadata[i] = item
        return EstimatorGradientResult(
            gradients=gradients, metadata=metadata, options=Options(**options)
        )

    def _circuit_gradients(self, circuit, observables, values, parameters):
        """Gradients and metadata for rows that all use ``circuit``."""
        program = compile_circuit(circuit)
        blocks = _observable_blocks(observables)
        if blocks is not None:
            distinct_obs, obs_of = blocks, None
        else:
            distinct_obs, obs_of = index_by_identity(observables)
        sums = [pauli_sum(obs) for obs in distinct_obs]
        tiled = _tiled_rows(values, obs_of, len(sums))
        if tiled is not None:  # EstimatorQNN: the same rows once per observable, in blocks
            rows, row_of = tiled
            pairs, column = None, obs_of
        else:
            if obs_of is None:
                obs_of = np.repeat(np.arange(len(blocks)), len(observables) // len(blocks))
            rows, row_of = unique_rows(values)
            pairs, column = pair_layout(row_of, obs_of, rows.shape[0], len(sums))

        choices, choice_of = index_by_identity(parameters)
        selections = [_selection(c, circuit, program.parameter_names) for c in choices]
        needed = np.zeros(program.num_parameters, dtype=bool)
        for _, cols in selections:
            needed[slice(None) if cols is None else cols] = True
        slot_mask = None
        if not needed.all():
            slot_mask = program.angle_map.dependency()[:, needed].any(axis=1)

        real_only = self._derivative_type == DerivativeType.REAL
        sweep = self._simulator.run(
            program,
            rows,
            sums,
            pairs,
            gradient=True,
            slot_mask=slot_mask,
            real_only=real_only,
            with_values=False,
        )
        if row_of is None:  # tiled: row k * B + r is row r's gradient of observable k
            full = sweep.gradients.transpose(1, 0, 2).reshape(-1, sweep.gradients.shape[-1])
        else:
            full = sweep.gradients[row_of, column]  # (G, P)
        if self._derivative_type == DerivativeType.IMAG:
            full = full.imag

        extra = {}
        if self._derivative_type == DerivativeType.COMPLEX:
            extra = {"derivative_type": DerivativeType.COMPLEX}
        if len(selections) == 1:  # one metadata dict, shared by all rows
            chosen, cols = selections[0]
            grads = GradientRows(full if cols is None else full[:, cols])
            return grads, [{"parameters": chosen, **extra}] * len(grads)
        grads, meta = [], []
        for i, k in enumerate(choice_of.tolist()):
            chosen, cols = selections[k]
            grads.append(full[i] if cols is None else full[i, cols])
            meta.append({"parameters": chosen, **extra})
        return grads, meta


class GradientRows(list):
    """The rows of a ``(G, P)`` gradient array as a list (what ``EstimatorGradientResult``
    holds), which NumPy converts back to that array without a copy: ``EstimatorQNN`` calls
    ``np.asarray(result.gradients)`` on every backward pass, which for a plain list of ``G``
    rows is a per-row loop. Any change to the list itself drops the array (the rows are views
    of it, so changes to their entries are seen by both)."""

    __slots__ = ("_array",)

    def __init__(self, array: np.ndarray) -> None:
        super().__init__(array)
        self._array = array

    def __array__(self, dtype=None, copy=None):
        array = self._array
        if array is None or len(array) != len(self):
            array = np.array(list(self))
        if dtype is not None:
            array = array.astype(dtype, copy=False)
        return array.copy() if copy else array


def _drops_array(method):
    def wrapper(self, *args, **kwargs):
        self._array = None
        return method(self, *args, **kwargs)

    wrapper.__name__ = method.__name__
    return wrapper


for _name in (
    "__setitem__",
    "__delitem__",
    "__iadd__",
    "__imul__",
    "append",
    "extend",
    "insert",
    "pop",
    "remove",
    "clear",
    "sort",
    "reverse",
):
    setattr(GradientRows, _name, _drops_array(getattr(list, _name)))
del _name


def _observable_blocks(observables: Sequence) -> list | None:
    """The distinct observables when ``observables`` is ``K`` equal-length blocks, block ``k``
    repeating one object (each block a different one): how ``EstimatorQNN`` tiles its request;
    else ``None``. Checked by identity with C-level list operations."""
    count = len(observables)
    if count == 0 or not isinstance(observables, list):
        return None
    ids = list(map(id, observables))
    block = ids.count(ids[0])
    if count % block:
        return None
    heads = ids[::block]
    if len(set(heads)) != len(heads):
        return None
    for k, head in enumerate(heads):
        if ids[k * block : (k + 1) * block].count(head) != block:
            return None
    return observables[::block]


def _tiled_rows(values: np.ndarray, obs_of: np.ndarray | None, num_obs: int):
    """``(rows, row_of)`` when the request is ``K`` blocks of the same ``B`` rows with block ``k``
    asking for observable ``k`` (how ``EstimatorQNN`` tiles its batch), else ``None``
    (``obs_of`` ``None``: the observables are known to be in such blocks; ``row_of`` is then
    ``None`` too: row ``k * B + r`` is row ``r``)."""
    count = values.shape[0]
    if num_obs < 1 or count % num_obs:
        return None
    block = count // num_obs
    if block == 0:
        return None
    if obs_of is not None and not np.array_equal(obs_of, np.repeat(np.arange(num_obs), block)):
        return None
    rows = values[:block]
    if num_obs > 1 and not (values.reshape(num_obs, block, -1) == rows).all():
        return None
    rows = np.ascontiguousarray(rows, dtype=float)
    return rows, None if obs_of is None else np.tile(np.arange(block), num_obs)


def _selection(chosen, circuit, names) -> tuple[Sequence[Parameter], np.ndarray | None]:
    """The parameters of a row and their columns (``None`` = all, in circuit order)."""
    if chosen is None:
        return circuit.parameters, None
    position = {name: i for i, name in enumerate(names)}
    return chosen, np.array([position[p.name] for p in chosen], dtype=np.int64)


def _pick(items: Sequence, indices: np.ndarray | None) -> Sequence:
    return items if indices is None else [items[i] for i in indices]


def parameter_rows(parameter_values, indices: np.ndarray | None) -> np.ndarray:
    """Parameter rows ``indices`` (``None``: all) as a float array ``(N, P)``."""
    if isinstance(parameter_values, np.ndarray) and parameter_values.ndim == 2:
        chosen = parameter_values if indices is None else parameter_values[indices]
        return np.asarray(chosen, dtype=float)
    if indices is None:
        return np.asarray(parameter_values, dtype=float)
    return np.asarray([parameter_values[i] for i in indices], dtype=float)


def validate_gradient_arguments(circuits, observables, parameter_values, parameters) -> None:
    """The checks of ``BaseEstimatorGradient._validate_arguments``, once per distinct object."""
    if len(circuits) != len(parameter_values):
        raise ValueError(
            f"The number of circuits ({len(circuits)}) does not match "
            f"the number of parameter value sets ({len(parameter_values)})."
        )
    if len(circuits) != len(observables):
        raise ValueError(
            f"The number of circuits ({len(circuits)}) does not match "
            f"the number of observables ({len(observables)})."
        )
    if len(circuits) != len(parameters):
        raise ValueError(
            f"The number of circuits ({len(circuits)}) does not match "
            f"the number of the list of specified parameters ({len(parameters)})."
        )
    distinct, circuit_of = index_by_identity(circuits)
    for k, circuit in enumerate(distinct):
        indices = np.flatnonzero(circuit_of == k)
        first = int(indices[0])
        if not circuit.num_parameters:
            raise ValueError(f"The {first}-th circuit is not parameterised.")
        width = circuit.num_parameters
        if isinstance(parameter_values, np.ndarray) and parameter_values.ndim == 2:
            widths = {parameter_values.shape[1]}
        else:
            widths = {len(parameter_values[i]) for i in indices}
        if widths != {width}:
            raise ValueError(
                f"The number of values ({widths}) does not match "
                f"the number of parameters ({width}) for the {first}-th circuit."
            )
        group = indices if len(distinct) > 1 else slice(None)
        obs_group = observables if len(distinct) == 1 else [observables[i] for i in group]
        blocks = _observable_blocks(obs_group)
        if blocks is None:
            blocks = dict(zip(map(id, obs_group), obs_group, strict=True)).values()
        for obs in blocks:
            if obs.num_qubits != circuit.num_qubits:
                raise ValueError(
                    f"The number of qubits of the {first}-th circuit ({circuit.num_qubits}) does "
                    f"not match the number of qubits of an observable ({obs.num_qubits})."
                )
        param_group = parameters if len(distinct) == 1 else [parameters[i] for i in group]
        if all(chosen is None for chosen in param_group):  # no selection (by identity)
            continue
        distinct_params = dict(zip(map(id, param_group), param_group, strict=True)).values()
        if all(chosen is None for chosen in distinct_params):
            continue
        names = set(circuit.parameters)
        for chosen in distinct_params:
            if chosen is not None and not set(chosen).issubset(names):
                raise ValueError(
                    f"The {first}-th parameters contains parameters not present in the "
                    f"{first}-th circuit."
                )
