"""Fewer two-qubit gates on the device: a scored search over exact transpilations of a template.

``transpile_template(..., search=...)`` (:mod:`qhqcnn.backends.transpile`) calls
:func:`search_transpile`, so the ``aer`` noise backend and the hardware path run the same
step. Candidates are

* the template in its own gate order and in ``orders − 1`` other orders that differ only by
  swapping commuting gates (diagonal gates such as the attention ladders' ``cp`` commute with
  each other; gates on disjoint qubits commute): the same unitary, routed differently;
* each transpiled at ``optimization_level`` (3 by default) with ``seeds`` transpiler seeds
  (Sabre layout and routing trials differ per seed);
* optionally with approximate synthesis (``approximation_degree`` < 1), kept only when its
  exact expectation values stay within ``max_approx_error`` of the template's.

Every candidate is scored by the device's calibrated errors (the estimated success probability:
the product of ``1 − error`` over the ISA circuit's gates and the readout of the measured
qubits, from ``backend.target``); the best one wins, ties broken by fewer two-qubit gates and
smaller depth. The candidates table is kept in ``PreparedCircuit.info["search"]``.

No cheaper exact decomposition of the attention block's Toffoli ring was found: splitting each
CCX into a doubly-controlled −iX on ring edges (4 CX) leaves a diagonal correction with at least
7 multi-qubit parity terms (more CX than the 24 it saves routing on); see docs/hardware.md.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from qiskit import QuantumCircuit

from qhqcnn.errors import ConfigError

#: Gates diagonal in the computational basis: any two of them commute.
DIAGONAL_GATES = frozenset(
    {"cp", "cz", "ccz", "crz", "rz", "p", "z", "s", "sdg", "t", "tdg", "rzz", "cs", "csdg", "id"}
)
#: Defaults of ``search=True``: per (small, large) device.
DEFAULT_SEEDS = {"small": 6, "large": 2}
DEFAULT_ORDERS = {"small": 3, "large": 2}
LARGE_DEVICE_QUBITS = 32
#: Largest accepted deviation of an approximate synthesis' exact values from the template's.
DEFAULT_MAX_APPROX_ERROR = 1e-3


@dataclass(frozen=True)
class SearchOptions:
    """How :func:`search_transpile` searches (saved with the circuit facts)."""

    seeds: int | None = None
    orders: int | None = None
    optimization_level: int = 3
    approximation_degree: float | None = None
    max_approx_error: float = DEFAULT_MAX_APPROX_ERROR
    seed: int = 1234

    def __post_init__(self) -> None:
        if self.optimization_level not in (0, 1, 2, 3):
            raise ConfigError("optimization level must be 0-3")
        if self.approximation_degree is not None and not 0 < self.approximation_degree <= 1:
            raise ConfigError("approximation degree must be in (0, 1]")

    @classmethod
    def coerce(cls, value: Any) -> SearchOptions | None:
        """``None``/``False`` → no search; ``True`` → defaults; a dict or ``SearchOptions``."""
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if isinstance(value, SearchOptions):
            return value
        if isinstance(value, dict):
            return cls(**value)
        raise ConfigError(f"invalid transpiler search options {value!r}")

    def resolved(self, num_device_qubits: int) -> tuple[int, int]:
        size = "large" if num_device_qubits > LARGE_DEVICE_QUBITS else "small"
        return (self.seeds or DEFAULT_SEEDS[size], self.orders or DEFAULT_ORDERS[size])

    def to_dict(self) -> dict[str, Any]:
        return {
            "seeds": self.seeds,
            "orders": self.orders,
            "optimization_level": self.optimization_level,
            "approximation_degree": self.approximation_degree,
            "max_approx_error": self.max_approx_error,
            "seed": self.seed,
        }


# -- equivalent gate orders --------------------------------------------------------------------
def _commute(a, b, qa: set[int], qb: set[int]) -> bool:
    if not qa & qb:
        return True
    return a.operation.name in DIAGONAL_GATES and b.operation.name in DIAGONAL_GATES


def reordered(circuit: QuantumCircuit, rng: random.Random) -> QuantumCircuit:
    """``circuit`` with its gates in a random order that keeps every non-commuting pair (and
    every barrier) in place: a random topological order of its commutation DAG. The same unitary
    (exactly: only commuting gates change places)."""
    data = list(circuit.data)
    qubits = [{circuit.find_bit(q).index for q in ins.qubits} for ins in data]
    # Barriers split the circuit into segments reordered separately.
    out = QuantumCircuit(*circuit.qregs, *circuit.cregs, name=circuit.name)
    out.global_phase = circuit.global_phase
    segment: list[int] = []

    def flush() -> None:
        preds = {
            k: {
                j for j in segment if j < k and not _commute(data[j], data[k], qubits[j], qubits[k])
            }
            for k in segment
        }
        done: set[int] = set()
        while len(done) < len(segment):
            ready = [k for k in segment if k not in done and preds[k] <= done]
            k = rng.choice(ready)
            done.add(k)
            out.append(data[k])
        segment.clear()

    for k, ins in enumerate(data):
        if ins.operation.name == "barrier":
            flush()
            out.append(ins)
        else:
            segment.append(k)
    flush()
    return out


def gate_orders(circuit: QuantumCircuit, count: int, seed: int = 1234) -> list[QuantumCircuit]:
    """The circuit itself and ``count − 1`` commutation-equivalent reorderings (deterministic)."""
    orders = [circuit]
    for k in range(1, count):
        orders.append(reordered(circuit, random.Random(seed + k)))
    return orders


# -- scoring -----------------------------------------------------------------------------------
def _error(target, name: str, qargs: tuple[int, ...]) -> float:
    try:
        props = target[name][qargs]
    except KeyError:
        return 0.0
    error = getattr(props, "error", None) if props is not None else None
    return float(error) if error is not None and math.isfinite(error) else 0.0


def calibrated_score(isa: QuantumCircuit, target, measured: Sequence[int]) -> dict[str, float]:
    """Estimated success probability of ``isa`` from the target's calibrated errors."""
    log_esp = 0.0
    for ins in isa.data:
        name = ins.operation.name
        if name in ("barrier", "delay"):
            continue
        qargs = tuple(isa.find_bit(q).index for q in ins.qubits)
        log_esp += math.log(max(1e-12, 1.0 - _error(target, name, qargs)))
    for qubit in measured:
        log_esp += math.log(max(1e-12, 1.0 - _error(target, "measure", (int(qubit),))))
    return {"log_esp": log_esp, "esp": math.exp(log_esp)}


# -- exactness ---------------------------------------------------------------------------------
def template_values(template, values: np.ndarray) -> np.ndarray:
    """Exact ⟨O⟩ of the logical template at parameter rows ``values`` (inputs then weights)."""
    from qiskit.quantum_info import Statevector

    params = list(template.input_params) + list(template.weight_params)
    out = []
    for row in np.atleast_2d(values):
        state = Statevector(template.circuit.assign_parameters(dict(zip(params, row, strict=True))))
        out.append([float(np.real(state.expectation_value(o))) for o in template.observables])
    return np.asarray(out)


def prepared_values(prepared, template, values: np.ndarray) -> np.ndarray:
    """Exact ⟨O⟩ of a transpiled (ISA) circuit, on its active qubits, at the same rows."""
    from qiskit.quantum_info import Statevector

    from qhqcnn.backends.compact import compact_circuit

    compact = compact_circuit(prepared).prepared
    by_name = {p.name: p for p in compact.circuit.parameters}
    names = [p.name for p in template.input_params] + [p.name for p in template.weight_params]
    out = []
    for row in np.atleast_2d(values):
        binding = {by_name[n]: v for n, v in zip(names, row, strict=True) if n in by_name}
        state = Statevector(compact.circuit.assign_parameters(binding))
        out.append([float(np.real(state.expectation_value(o))) for o in compact.observables])
    return np.asarray(out)


def random_rows(template, count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    size = len(template.input_params) + len(template.weight_params)
    return rng.uniform(-np.pi, np.pi, (count, size))


def max_deviation(prepared, template, count: int = 3, seed: int = 0) -> float:
    """Largest |⟨O⟩ ISA − ⟨O⟩ template| over ``count`` random parameter rows."""
    rows = random_rows(template, count, seed)
    return float(
        np.max(np.abs(prepared_values(prepared, template, rows) - template_values(template, rows)))
    )


# -- search ------------------------------------------------------------------------------------
def measured_qubits(isa: QuantumCircuit, observables) -> list[int]:
    from qhqcnn.backends.compact import observable_support

    support: set[int] = set()
    for obs in observables:
        support |= observable_support(obs.apply_layout(isa.layout))
    return sorted(support)


def search_transpile(
    template,
    backend,
    options: SearchOptions,
    *,
    initial_layout: Sequence[int] | None = None,
    run_candidate,
) -> tuple[QuantumCircuit, dict[str, Any]]:
    """The best-scoring ISA circuit of ``template`` on ``backend`` and the search's record.

    ``run_candidate(circuit, level, seed, layout, approximation_degree)`` transpiles one candidate
    (``qhqcnn.backends.transpile`` passes its own, so both share every other detail).
    """
    from qiskit_machine_learning.utils import circuit_cache_key

    key = (
        circuit_cache_key(template.circuit),
        getattr(backend, "name", None),
        id(backend),
        repr(options),
        None if initial_layout is None else tuple(initial_layout),
    )
    hit = _SEARCHED.get(key)
    if hit is not None and hit[0] is backend:
        # Another instance of the same template: same circuit, its own Parameter objects
        # (EstimatorQNN binds by object), so they are substituted by name.
        by_name = {p.name: p for p in template.circuit.parameters}
        isa = hit[1].copy()
        swap = {p: by_name[p.name] for p in isa.parameters if by_name.get(p.name, p) != p}
        if swap:  # via placeholders: a circuit cannot hold two parameters of one name
            from qiskit.circuit import Parameter

            # The global phase (a long symbolic expression after transpilation) changes no
            # expectation value and makes substitution take minutes: it is dropped, as
            # qhqcnn.backends.compact does for simulation.
            isa.global_phase = 0.0
            hold = {old: Parameter(f"_swap{i}") for i, old in enumerate(swap)}
            isa.assign_parameters(hold, inplace=True)
            isa.assign_parameters({hold[old]: new for old, new in swap.items()}, inplace=True)
        return isa, dict(hit[2])
    isa, record = _search(template, backend, options, initial_layout, run_candidate)
    _SEARCHED[key] = (backend, isa, record)
    return isa.copy(), dict(record)


#: Search results of this process (the search runs dozens of transpilations).
_SEARCHED: dict[tuple, tuple[Any, QuantumCircuit, dict[str, Any]]] = {}


def _search(template, backend, options, initial_layout, run_candidate):
    from qhqcnn.backends.transpile import two_qubit_gate_count

    target = getattr(backend, "target", backend)
    num_device_qubits = int(getattr(backend, "num_qubits", None) or target.num_qubits)
    seeds, orders = options.resolved(num_device_qubits)
    candidates = []
    best = None
    for order_index, circuit in enumerate(gate_orders(template.circuit, orders, options.seed)):
        for k in range(seeds):
            seed = options.seed + k
            isa = run_candidate(
                circuit,
                options.optimization_level,
                seed,
                initial_layout,
                options.approximation_degree,
            )
            score = calibrated_score(isa, target, measured_qubits(isa, template.observables))
            row = {
                "order": order_index,
                "seed": seed,
                "two_qubit_gates": two_qubit_gate_count(isa),
                "depth": isa.depth(),
                "esp": round(score["esp"], 6),
            }
            candidates.append(row)
            key = (-score["log_esp"], row["two_qubit_gates"], row["depth"])
            if best is None or key < best[0]:
                best = (key, isa, row)
    assert best is not None
    record = {
        "options": options.to_dict(),
        "resolved": {"seeds": seeds, "orders": orders},
        "chosen": best[2],
        "candidates": len(candidates),
        "two_qubit_gates_range": [
            min(c["two_qubit_gates"] for c in candidates),
            max(c["two_qubit_gates"] for c in candidates),
        ],
        "scored_by": "estimated success probability from the target's calibrated gate and "
        "readout errors",
    }
    return best[1], record
