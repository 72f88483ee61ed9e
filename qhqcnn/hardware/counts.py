"""``qhqcnn hardware counts``: two-qubit gates and depth of every template on each device,
one preset transpilation (what ran before the search) against the transpiler search."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from qhqcnn.backends.devices import get_backend
from qhqcnn.backends.transpile import transpile_template
from qhqcnn.errors import ConfigError
from qhqcnn.export.library import TEMPLATES, load_template

#: The transpilation every record used before the search (settings of hardware_jobs/*-test).
PRESET = {"optimization_level": 2, "seed_transpiler": 1234}


def count_rows(
    templates: Sequence[str],
    backends: Sequence[str],
    *,
    search: dict[str, Any] | None = None,
    check: bool = True,
    synthesis: Any = None,
    weights: dict[str, np.ndarray] | None = None,
) -> list[dict[str, Any]]:
    """One row per (template, device): preset vs search counts, and the search's exactness.

    With ``synthesis`` (:class:`qhqcnn.backends.synthesis.SynthesisOptions`), also the counts of
    the synthesized circuit (weights bound: ``weights[name]``, else the template's initial
    weights drawn with seed 0, i.e. trained-like values) after the same search, its stated
    output bound, and its largest output change against the template at those weights.
    """
    from qhqcnn.backends.search import max_deviation

    rows = []
    for backend_name in backends:
        backend = get_backend(backend_name)
        for name in templates:
            template = with_observables(load_template(name))
            if weights and name in weights and len(weights[name]) != template.num_weights:
                raise ConfigError(f"{len(weights[name])} weights given for {name}, "
                                  f"which has {template.num_weights}")  # fmt: skip
            start = time.perf_counter()
            before = transpile_template(template, backend, **PRESET)
            after = transpile_template(template, backend, search=search or True)
            seconds = time.perf_counter() - start
            row = {
                "template": name,
                "device": backend.name,
                "qubits": template.num_qubits,
                "before_2q": before.info["two_qubit_gates"],
                "before_depth": before.info["depth"],
                "after_2q": after.info["two_qubit_gates"],
                "after_depth": after.info["depth"],
                "layout": after.info["layout"],
                "candidates": after.info["search"]["candidates"],
                "seconds": round(seconds, 1),
            }
            if check:
                row["max_abs_deviation"] = max_deviation(after, template)
            if synthesis is not None:
                row.update(synthesized_row(template, backend, search, synthesis, weights, name))
            rows.append(row)
    return rows


def synthesized_row(template, backend, search, synthesis, weights, name) -> dict[str, Any]:
    from qhqcnn.backends.synthesis import synthesize

    if weights and name in weights:
        bound, source = np.asarray(weights[name], dtype=float), "trained"
    else:
        bound, source = template.init_weights(np.random.default_rng(0)), "initial (seed 0)"
    start = time.perf_counter()
    try:
        device_template, record = synthesize(template, bound, synthesis)
    except ConfigError as exc:
        return {"synth_note": str(exc)}
    if not record["accepted"]:
        return {"synth_note": record["note"], "synth_record": record}
    prepared = transpile_template(device_template, backend, search=search or True)
    row = {
        "synth_2q": prepared.info["two_qubit_gates"],
        "synth_depth": prepared.info["depth"],
        "synth_cnots": record["cnots"],
        "synth_bound": record["output_bound"],
        "synth_weights": source,
        "synth_layout": prepared.info["layout"],
        "synth_seconds": round(time.perf_counter() - start, 1),
        "synth_record": record,
    }
    row["synth_max_abs_deviation"] = synthesized_deviation(prepared, template, bound)
    return row


def synthesized_deviation(prepared, template, weights, count: int = 16, seed: int = 0) -> float:
    """Largest |⟨O⟩ device circuit − ⟨O⟩ template| (exact values) at ``count`` random inputs,
    the template's weights bound to ``weights``."""
    from qiskit.quantum_info import Statevector

    from qhqcnn.backends.compact import compact_circuit
    from qhqcnn.backends.search import template_values

    rng = np.random.default_rng(seed)
    inputs = rng.uniform(-np.pi, np.pi, (count, template.num_inputs))
    rows = np.hstack([inputs, np.tile(weights, (count, 1))])
    expected = template_values(template, rows)
    compact = compact_circuit(prepared).prepared
    by_name = {p.name: i for i, p in enumerate(template.input_params)}
    got = []
    for row in inputs:
        state = Statevector(
            compact.circuit.assign_parameters(
                {p: row[by_name[p.name]] for p in compact.circuit.parameters}
            )  # fmt: skip
        )
        got.append([float(np.real(state.expectation_value(o))) for o in compact.observables])
    return float(np.max(np.abs(np.asarray(got) - expected)))


def format_rows(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| template | device | 2q before | depth before | 2q after | depth after | change | "
        "max |Δ⟨O⟩| vs template | candidates |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    synthesized = [r for r in rows if "synth_2q" in r or "synth_note" in r]
    if synthesized:
        return "\n".join([*lines, *_plain_rows(rows), "", *_synthesized_rows(synthesized)])
    return "\n".join([*lines, *_plain_rows(rows)])


def _synthesized_rows(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| template | device | 2q before | 2q synthesized | depth synthesized | change | CNOTs "
        "| stated bound | max |Δ⟨O⟩| vs template | weights |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if "synth_2q" not in r:
            lines.append(f"| {r['template']} | {r['device']} | {r['before_2q']} | - | - | - | - "
                         f"| - | - | {r['synth_note']} |")  # fmt: skip
            continue
        change = (r["synth_2q"] - r["before_2q"]) / r["before_2q"] if r["before_2q"] else 0.0
        lines.append(
            f"| {r['template']} | {r['device']} | {r['before_2q']} | {r['synth_2q']} | "
            f"{r['synth_depth']} | {change:+.0%} | {r['synth_cnots']} | {r['synth_bound']:.1e} "
            f"| {r['synth_max_abs_deviation']:.1e} | {r['synth_weights']} |"
        )
    return lines


def _plain_rows(rows: list[dict[str, Any]]) -> list[str]:
    lines = []
    for r in rows:
        change = (r["after_2q"] - r["before_2q"]) / r["before_2q"] if r["before_2q"] else 0.0
        dev = r.get("max_abs_deviation")
        lines.append(
            f"| {r['template']} | {r['device']} | {r['before_2q']} | {r['before_depth']} | "
            f"{r['after_2q']} | {r['after_depth']} | {change:+.0%} | "
            + ("-" if dev is None else f"{dev:.1e}")
            + f" | {r['candidates']} |"
        )
    return lines


def with_observables(template):
    """Blocks of the library measure nothing: give them ⟨Z_i⟩, ⟨X_i⟩ so that the exactness
    check has outputs to compare (the circuit is unchanged)."""
    if template.observables:
        return template
    from dataclasses import replace

    from qhqcnn.circuits.template import single_qubit_observables

    observables, names = single_qubit_observables(template.num_qubits, ("Z", "X"))
    return replace(template, observables=observables, output_names=names)


def all_templates() -> list[str]:
    return list(TEMPLATES)
