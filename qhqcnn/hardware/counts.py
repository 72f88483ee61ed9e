"""``qhqcnn hardware counts``: two-qubit gates and depth of every template on each device,
one preset transpilation (what ran before the search) against the transpiler search."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from qhqcnn.backends.devices import get_backend
from qhqcnn.backends.transpile import transpile_template
from qhqcnn.export.library import TEMPLATES, load_template

#: The transpilation every record used before the search (settings of hardware_jobs/*-test).
PRESET = {"optimization_level": 2, "seed_transpiler": 1234}


def count_rows(
    templates: Sequence[str],
    backends: Sequence[str],
    *,
    search: dict[str, Any] | None = None,
    check: bool = True,
) -> list[dict[str, Any]]:
    """One row per (template, device): preset vs search counts, and the search's exactness."""
    from qhqcnn.backends.search import max_deviation

    rows = []
    for backend_name in backends:
        backend = get_backend(backend_name)
        for name in templates:
            template = with_observables(load_template(name))
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
            rows.append(row)
    return rows


def format_rows(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| template | device | 2q before | depth before | 2q after | depth after | change | "
        "max |Δ⟨O⟩| vs template | candidates |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        change = (r["after_2q"] - r["before_2q"]) / r["before_2q"] if r["before_2q"] else 0.0
        dev = r.get("max_abs_deviation")
        lines.append(
            f"| {r['template']} | {r['device']} | {r['before_2q']} | {r['before_depth']} | "
            f"{r['after_2q']} | {r['after_depth']} | {change:+.0%} | "
            + ("-" if dev is None else f"{dev:.1e}")
            + f" | {r['candidates']} |"
        )
    return "\n".join(lines)


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
