"""``FastEstimator``: a drop-in ``BaseEstimatorV2`` with the contract of ``StatevectorEstimator``.

Every PUB is coerced with ``EstimatorPub.coerce`` and broadcast as Qiskit defines it. All PUBs of
one circuit are evaluated in a single vectorized simulation: their distinct parameter rows are
simulated once, for every observable any PUB asks about them (``EstimatorQNN`` sends one PUB per
observable with the same rows; parameter-shift gradients send thousands of one-row PUBs). Exact
PUBs that share one circuit and one values array (``EstimatorQNN``'s call) skip the
``EstimatorPub`` objects: the checks their validation makes are done directly.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from numbers import Real

import numpy as np
import torch
from qiskit.circuit import QuantumCircuit
from qiskit.primitives import BaseEstimatorV2
from qiskit.primitives.containers import DataBin, EstimatorPubLike, PrimitiveResult, PubResult
from qiskit.primitives.containers.bindings_array import BindingsArray
from qiskit.primitives.containers.estimator_pub import EstimatorPub
from qiskit.primitives.containers.observables_array import ObservablesArray
from qiskit.providers import Options
from qiskit.quantum_info import SparsePauliOp

from .batching import pair_layout, unique_rows
from .compile import compile_circuit
from .jobs import InlineJob
from .observables import PauliSum, pauli_content_key, pauli_sum
from .options import EngineOptions
from .program import Program
from .small import DEFAULT_SMALL_MAX_QUBITS
from .statevector import DEFAULT_DENSE_MAX_QUBITS


@dataclass
class _PubPlan:
    """A PUB's values table, its observables and the broadcast index of each result element."""

    pub: EstimatorPub
    program: Program
    values: np.ndarray  # (N, P)
    observables: list[PauliSum]
    value_index: np.ndarray  # pub.shape -> row of ``values``
    obs_index: np.ndarray  # pub.shape -> index into ``observables``


def parameter_table(pub: EstimatorPub, program: Program) -> np.ndarray:
    """The PUB's parameter values as ``(N, P)`` in ``circuit.parameters`` order."""
    bindings = pub.parameter_values
    count = int(np.prod(bindings.shape, dtype=int))
    if program.num_parameters == 0:
        return np.zeros((count, 0))
    data = bindings.data
    if len(data) == 1 and next(iter(data)) == program.parameter_names:
        array = next(iter(data.values()))
    else:
        array = bindings.as_array(program.parameter_names)
    return np.asarray(array, dtype=float).reshape(count, program.num_parameters)


def _observable_fingerprint(observable) -> tuple | None:
    """Content of a ``SparsePauliOp`` or Pauli label (``None``: not cached)."""
    if isinstance(observable, str):
        return ("label", observable)
    if type(observable) is SparsePauliOp:
        return ("spo", *pauli_content_key(observable))
    return None


class _ObservablesCache:
    """``ObservablesArray.coerce`` results (and their Pauli sums) for observables passed again
    and again (``EstimatorQNN``: the same objects every batch), checked by content."""

    def __init__(self, maxsize: int = 256) -> None:
        self._entries: dict[tuple, tuple[ObservablesArray, list[PauliSum]]] = {}
        self._lock = threading.Lock()
        self._maxsize = maxsize

    def get(self, observable):
        key = _observable_fingerprint(observable)
        if key is None:
            return None
        with self._lock:
            hit = self._entries.get(key)
        if hit is not None:
            return hit[0]
        array = ObservablesArray.coerce(observable)
        sums = [pauli_sum(obs) for obs in array.sparse_observables_array().ravel()]
        with self._lock:
            if len(self._entries) >= self._maxsize:
                self._entries.clear()
            self._entries[key] = (array, sums)
            _SUMS[id(array)] = (array, sums)
        return array


#: Pauli sums of the cached ``ObservablesArray`` objects, by identity (with the object).
_SUMS: dict[int, tuple[ObservablesArray, list[PauliSum]]] = {}
_OBSERVABLES = _ObservablesCache()


def _pauli_sums(observables: ObservablesArray) -> list[PauliSum]:
    hit = _SUMS.get(id(observables))
    if hit is not None and hit[0] is observables:
        return hit[1]
    return [pauli_sum(obs) for obs in observables.sparse_observables_array().ravel()]


def coerce_pubs(pubs: Iterable[EstimatorPubLike], precision: float | None) -> list[EstimatorPub]:
    """``EstimatorPub.coerce`` for every PUB; PUBs that pass the *same* values array object (as
    ``EstimatorQNN`` does, one PUB per observable) share one ``BindingsArray``, and observables
    seen before (same content) reuse their coerced ``ObservablesArray``. Such PUBs are validated
    like ``EstimatorPub.coerce`` does once per (circuit, values, observable shape)."""
    if precision is not None and (not isinstance(precision, Real) or precision < 0):
        return [EstimatorPub.coerce(pub, precision) for pub in pubs]  # raises as qiskit does
    shared: dict[tuple[int, int], BindingsArray] = {}
    validated: set[tuple] = set()
    coerced = []
    for pub in pubs:
        values = pub[2] if isinstance(pub, tuple) and len(pub) in (3, 4) else None
        if not isinstance(values, np.ndarray) or not isinstance(pub[0], QuantumCircuit):
            coerced.append(EstimatorPub.coerce(pub, precision))
            continue
        key = (id(pub[0]), id(values))
        if key not in shared:
            shared[key] = BindingsArray.coerce({tuple(pub[0].parameters): values})
        pub_precision = pub[3] if len(pub) == 4 and pub[3] is not None else precision
        observables = _OBSERVABLES.get(pub[1])
        if observables is None or not isinstance(pub_precision, Real | None):
            shaped = (pub[0], pub[1], shared[key], pub_precision)
            coerced.append(EstimatorPub.coerce(shaped, precision))
            continue
        check = (key, observables.shape, observables.num_qubits if observables.size else None)
        coerced.append(
            EstimatorPub(
                pub[0], observables, shared[key], pub_precision, validate=check not in validated
            )
        )
        validated.add(check)
    return coerced


def _shared_values_pubs(pubs, precision) -> tuple | None:
    """``(circuit, pauli sums, values)`` when ``pubs`` is a list of exact ``(circuit, observable,
    values)`` tuples passing the same circuit and the same 2-D float values array, each with one
    observable seen before (``EstimatorQNN``'s forward call); ``None`` for anything else (those
    PUBs go through ``EstimatorPub.coerce``). The checks are those ``EstimatorPub`` validation
    makes for such PUBs: values ``(N, num_parameters)``, observable width = circuit width."""
    if not isinstance(pubs, list | tuple) or not pubs or precision != 0:
        return None
    first = pubs[0]
    if not isinstance(first, tuple) or len(first) != 3:
        return None
    circuit, _, values = first
    if not isinstance(circuit, QuantumCircuit) or not isinstance(values, np.ndarray):
        return None
    if values.ndim != 2 or values.dtype != np.float64 or circuit.num_parameters == 0:
        return None
    if values.shape[1] != circuit.num_parameters or values.shape[0] == 0:
        return None
    sums = []
    for pub in pubs:
        if not isinstance(pub, tuple) or len(pub) != 3 or pub[0] is not circuit:
            return None
        if pub[2] is not values:
            return None
        array = _OBSERVABLES.get(pub[1])
        if array is None or array.shape != () or array.num_qubits != circuit.num_qubits:
            return None
        sums.append(_pauli_sums(array)[0])
    return circuit, sums, values, precision


def _plan(pub: EstimatorPub, programs: dict[int, Program]) -> _PubPlan:
    program = programs.get(id(pub.circuit))
    if program is None:
        program = programs[id(pub.circuit)] = compile_circuit(pub.circuit)
    values = parameter_table(pub, program)
    observables = _pauli_sums(pub.observables)
    shape = pub.shape
    value_index = np.broadcast_to(
        np.arange(values.shape[0]).reshape(pub.parameter_values.shape), shape
    )
    obs_index = np.broadcast_to(np.arange(len(observables)).reshape(pub.observables.shape), shape)
    return _PubPlan(pub, program, values, observables, value_index, obs_index)


class FastEstimator(BaseEstimatorV2):
    """Exact, vectorized statevector estimator (torch; complex128 by default).

    Args:
        default_precision: precision used when neither ``run`` nor the PUB sets one. ``0`` is
            exact; ``> 0`` adds ``N(0, precision)`` noise like ``StatevectorEstimator``.
        seed: seed or ``numpy.random.Generator`` for that noise (a fresh generator per PUB, as in
            ``StatevectorEstimator``).
        device: torch device (``"cpu"``, ``"cuda"``, ...).
        dtype: ``torch.complex128`` (default) or ``torch.complex64``.
        dense_max_qubits: circuits up to this width use full-matrix gates.
        cache_forward: remember the last forward simulations for a following gradient call.
        small_max_qubits: circuits up to this width (and ``dense_max_qubits``) run on the
            segment path (:mod:`qhqcnn.engine.small`); ``0`` keeps them on the block path.
    """

    def __init__(
        self,
        *,
        default_precision: float = 0.0,
        seed: np.random.Generator | int | None = None,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = torch.complex128,
        dense_max_qubits: int = DEFAULT_DENSE_MAX_QUBITS,
        cache_forward: bool = True,
        small_max_qubits: int = DEFAULT_SMALL_MAX_QUBITS,
    ) -> None:
        self._default_precision = default_precision
        self._seed = seed
        self.engine_options = EngineOptions.create(
            device, dtype, dense_max_qubits, cache_forward, small_max_qubits
        )
        self._simulator = self.engine_options.simulator()

    @property
    def default_precision(self) -> float:
        """The precision used when none is given."""
        return self._default_precision

    @property
    def seed(self) -> np.random.Generator | int | None:
        """The seed or generator of the precision noise."""
        return self._seed

    @property
    def options(self) -> Options:
        """The estimator's settings (read by estimator gradients)."""
        opts = self.engine_options
        return Options(
            default_precision=self._default_precision,
            seed=self._seed,
            device=str(opts.device),
            dtype=str(opts.dtype).removeprefix("torch."),
        )

    @property
    def simulator(self):
        """The underlying :class:`~qhqcnn.engine.statevector.StatevectorSimulator`."""
        return self._simulator

    def run(self, pubs: Iterable[EstimatorPubLike], *, precision: float | None = None) -> InlineJob:
        if precision is None:
            precision = self._default_precision
        shared = _shared_values_pubs(pubs, precision)
        if shared is not None:  # EstimatorQNN's call: no EstimatorPub objects needed
            job = InlineJob(self._run_shared, *shared)
        else:
            job = InlineJob(self._run, coerce_pubs(pubs, precision))
        job._submit()
        return job

    def _run_shared(
        self,
        circuit: QuantumCircuit,
        observables: list[PauliSum],
        values: np.ndarray,
        precision: float,
    ) -> PrimitiveResult[PubResult]:
        """Exact PUBs ``(circuit, observables[k], values)`` sharing one ``(N, P)`` values table:
        one simulation of its rows for every observable; results as :meth:`_run` gives them."""
        program = compile_circuit(circuit)
        evs = self._simulator.run(program, values, observables, None).values  # (N, K)
        metadata = {"target_precision": precision, "circuit_metadata": circuit.metadata}
        results = []
        for k in range(len(observables)):
            column = np.ascontiguousarray(evs[:, k])
            data = DataBin(evs=column, stds=np.zeros_like(column), shape=column.shape)
            results.append(PubResult(data, metadata=dict(metadata)))
        return PrimitiveResult(results, metadata={"version": 2})

    def _run(self, pubs: list[EstimatorPub]) -> PrimitiveResult[PubResult]:
        programs: dict[int, Program] = {}
        plans = [_plan(pub, programs) for pub in pubs]
        evs = self._evaluate(plans)
        results = []
        for plan, values in zip(plans, evs, strict=True):
            pub = plan.pub
            if pub.precision:
                rng = np.random.default_rng(self._seed)
                values = rng.normal(values, pub.precision)
            values = np.asarray(values, dtype=np.float64).reshape(pub.shape)
            data = DataBin(evs=values, stds=np.zeros_like(values), shape=values.shape)
            metadata = {"target_precision": pub.precision, "circuit_metadata": pub.circuit.metadata}
            results.append(PubResult(data, metadata=metadata))
        return PrimitiveResult(results, metadata={"version": 2})

    def _evaluate(self, plans: list[_PubPlan]) -> list[np.ndarray]:
        """Exact values for every plan; all plans of one circuit share one batched simulation."""
        groups: dict[int, list[int]] = {}
        for i, plan in enumerate(plans):
            groups.setdefault(id(plan.program), []).append(i)
        out: list[np.ndarray] = [np.empty(0)] * len(plans)
        for members in groups.values():
            values = self._evaluate_group([plans[i] for i in members])
            for i, value in zip(members, values, strict=True):
                out[i] = value
        return out

    def _evaluate_group(self, plans: list[_PubPlan]) -> list[np.ndarray]:
        """One simulation for PUBs of the same circuit: their distinct rows, every observable."""
        tables, offsets = [], {}
        for plan in plans:  # PUBs passing the same values array (EstimatorQNN) share rows
            if id(plan.values) not in offsets:
                offsets[id(plan.values)] = sum(len(t) for t in tables)
                tables.append(plan.values)
        if sum(len(t) for t in tables) == 0:
            return [np.zeros(plan.pub.shape) for plan in plans]
        rows, inverse = unique_rows(np.concatenate(tables) if len(tables) > 1 else tables[0])
        table: dict[int, int] = {}
        observables: list[PauliSum] = []
        row_parts, obs_parts = [], []
        for plan in plans:
            local = []
            for obs in plan.observables:
                if id(obs) not in table:
                    table[id(obs)] = len(observables)
                    observables.append(obs)
                local.append(table[id(obs)])
            row_parts.append(inverse[offsets[id(plan.values)] + plan.value_index].ravel())
            obs_parts.append(np.asarray(local, dtype=np.int64)[plan.obs_index].ravel())
        row_index, obs_index = np.concatenate(row_parts), np.concatenate(obs_parts)
        pairs, column = pair_layout(row_index, obs_index, rows.shape[0], len(observables))
        result = self._simulator.run(plans[0].program, rows, observables, pairs)
        flat = result.values[row_index, column]
        sizes = np.cumsum([plan.value_index.size for plan in plans])[:-1]
        return [
            part.reshape(plan.pub.shape)
            for part, plan in zip(np.split(flat, sizes), plans, strict=True)
        ]
