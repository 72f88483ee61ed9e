"""Transpile a circuit template once to a device's ISA, with observables mapped to its layout."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qiskit import QuantumCircuit
from qiskit.transpiler import generate_preset_pass_manager

from qhqcnn.backends.base import PreparedCircuit
from qhqcnn.circuits.template import CircuitTemplate
from qhqcnn.errors import BackendError


def two_qubit_gate_count(circuit: QuantumCircuit) -> int:
    return sum(1 for instr in circuit.data if instr.operation.num_qubits == 2)


def physical_layout(isa: QuantumCircuit) -> list[int]:
    """Physical qubit of each virtual qubit of the template (after routing, at the end)."""
    return list(isa.layout.final_index_layout()) if isa.layout is not None else []


def active_qubits(circuit: QuantumCircuit) -> list[int]:
    """Indices of the qubits that any instruction touches, sorted."""
    used = {circuit.find_bit(q).index for instr in circuit.data for q in instr.qubits}
    return sorted(used)


def transpile_template(
    template: CircuitTemplate,
    backend,
    *,
    optimization_level: int = 2,
    initial_layout: Sequence[int] | None = None,
    seed_transpiler: int = 1234,
    search: Any = None,
) -> PreparedCircuit:
    """The template as an ISA circuit of ``backend`` plus its observables mapped to the layout.

    ``EstimatorQNN`` is given this circuit and these observables directly (no ``pass_manager``),
    so the transpiler runs exactly once and gradients evaluate the same gates that would run.
    ``search`` (``True``, a dict or :class:`qhqcnn.backends.search.SearchOptions`) picks the
    best of several exact transpilations scored by the device's calibrated errors instead of
    one preset run (then ``optimization_level`` and ``seed_transpiler`` are the search's).
    """
    from qhqcnn.backends.search import SearchOptions, max_deviation, search_transpile

    layout = list(initial_layout) if initial_layout is not None else None

    def run(circuit, level, seed, fixed_layout, approximation_degree=None):
        manager = generate_preset_pass_manager(
            optimization_level=level,
            backend=backend,
            initial_layout=fixed_layout,
            seed_transpiler=seed,
            approximation_degree=approximation_degree,
        )
        return manager.run(circuit)

    options = SearchOptions.coerce(search)
    record = None
    try:
        if options is None:
            isa = run(template.circuit, optimization_level, seed_transpiler, layout)
        else:
            isa, record = search_transpile(
                template, backend, options, initial_layout=layout, run_candidate=run
            )
            optimization_level = options.optimization_level
    except Exception as exc:  # noqa: BLE001 - the transpiler raises many types
        raise BackendError(f"cannot transpile {template.name} for {backend.name}: {exc}") from exc
    missing = set(template.circuit.parameters) - set(isa.parameters)
    if missing:
        raise BackendError(
            f"transpiling for {backend.name} removed parameters {sorted(p.name for p in missing)}"
        )
    observables = tuple(obs.apply_layout(isa.layout) for obs in template.observables)
    prepared = PreparedCircuit(isa, observables, template.input_params, template.weight_params)
    if record is not None and options is not None and options.approximation_degree is not None:
        deviation = max_deviation(prepared, template)
        record["approximation_max_abs_deviation"] = deviation
        if deviation > options.max_approx_error:  # too coarse: the exact search instead
            exact = transpile_template(
                template,
                backend,
                initial_layout=initial_layout,
                search={**options.to_dict(), "approximation_degree": None},
            )
            exact.info["search"]["rejected_approximation"] = record
            return exact
    info: dict[str, Any] = {
        "transpiled": True,
        "device": backend.name,
        "optimization_level": optimization_level,
        "layout": physical_layout(isa),
        "depth": isa.depth(),
        "two_qubit_gates": two_qubit_gate_count(isa),
        "gate_counts": {str(k): int(v) for k, v in isa.count_ops().items()},
    }
    if record is not None:
        info["search"] = record
    return PreparedCircuit(isa, observables, template.input_params, template.weight_params, info)
