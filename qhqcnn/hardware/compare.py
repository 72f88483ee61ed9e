"""``qhqcnn hardware compare``: one trained model, the same images, every mitigation method.

For each device and each method (``none``, ``trex``, ``trex+dd``, ``twirling``, ``trex+zne``, …)
one job record is written (plan → submit → report, in the usual record layout, resumable: a
record that already has a report is read back, one without results is retrieved). Every record
carries the calibration (training) images, so each method is scored twice from the same job:
raw and with the calibrated readout. The table (ACC, AUC, ⟨O⟩ MAE and prediction agreement vs
the exact circuit, shots, estimated QPU seconds, jobs, wall time) is printed and written into a
marked section of a Markdown file (``docs/hardware.md`` by default).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from qhqcnn.hardware.manifest import MANIFEST_FILE, load_record, write_json
from qhqcnn.hardware.settings import ExecutionSettings, parse_mitigation

DEFAULT_METHODS = ("none", "trex", "trex+dd", "trex+twirling", "trex+zne")
COMPARE_FILE = "compare.json"


def method_mitigation(method: str) -> tuple[str, ...]:
    return parse_mitigation(method.replace("+", ","))


def _row(report: dict[str, Any], key: str) -> dict[str, Any]:
    s = report["comparison"]["sources"][key]
    return {
        "acc": s["acc"],
        "auc": s["auc"],
        "mae": s["mae_vs_exact"],
        "agreement": s["agreement_with_exact"],
    }


def run_method(
    run_dir: str,
    backend: str,
    method: str,
    settings: ExecutionSettings,
    jobs_dir: Path,
    name: str,
    *,
    limit: int | None,
    data_dir: str | None,
) -> dict[str, Any]:
    """Submit (or resume) one record and report on it; returns its table facts."""
    from qhqcnn.hardware.plan import build_plan, format_plan
    from qhqcnn.hardware.report import build_report
    from qhqcnn.hardware.retrieve import retrieve
    from qhqcnn.hardware.submit import submit

    path = jobs_dir / name
    facts_path = path / COMPARE_FILE
    if facts_path.exists():
        return json.loads(facts_path.read_text())
    start = time.perf_counter()
    if (path / MANIFEST_FILE).exists():
        retrieve(path)
        plan_text = None
    else:
        plan = build_plan(
            run_dir,
            backend,
            replace(settings, mitigation=method_mitigation(method)),
            limit=limit,
            data_dir=data_dir,
        )
        plan_text = format_plan(plan)
        print(plan_text, flush=True)
        submit(plan, jobs_dir, name=name)
    report = build_report(path, noisy=False)
    wall = time.perf_counter() - start
    record = load_record(path)
    usage = record.manifest["execution"]["usage_estimate"]
    facts = {
        "record": str(path),
        "device": record.backend_name,
        "method": method,
        "dataset": report["dataset"],
        "n_images": report["n_images"],
        "calibration_rows": (record.manifest.get("calibration") or {}).get("rows", 0),
        "exact": _row(report, "exact"),
        "raw": _row(report, "hardware"),
        "calibrated": _row(report, "hardware_calibrated")
        if "hardware_calibrated" in report["comparison"]["sources"]
        else None,
        "two_qubit_gates": record.manifest["circuit"]["transpile"]["two_qubit_gates"],
        "shots": usage["total_shots"],
        "estimated_qpu_seconds": usage["estimated_qpu_seconds"],
        "jobs": len(record.chunks),
        "wall_seconds": round(wall, 1),
        "local": record.local,
    }
    write_json(facts_path, facts)
    return facts


def format_table(rows: list[dict[str, Any]], title: str) -> str:
    if not rows:
        return f"### {title}\n\n(no finished records)\n"
    first = rows[0]
    lines = [
        f"### {title}",
        "",
        f"{first['dataset']}, {first['n_images']} test images (+ {first['calibration_rows']} "
        "training images for the calibration, in the same job); exact circuit: ACC "
        f"{first['exact']['acc']:.4f}, AUC {first['exact']['auc']:.4f}.",
        "",
        "| device | method | readout | ACC | ΔACC | AUC | ΔAUC | ⟨O⟩ MAE | agreement | 2q gates | "
        "shots | est. QPU s | jobs | wall s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        for kind in ("raw", "calibrated"):
            m = r.get(kind)
            if m is None:
                continue
            lines.append(
                f"| {r['device']} | {r['method']} | {kind} | {m['acc']:.4f} | "
                f"{m['acc'] - r['exact']['acc']:+.4f} | {m['auc']:.4f} | "
                f"{m['auc'] - r['exact']['auc']:+.4f} | {m['mae']:.4f} | {m['agreement']:.3f} | "
                f"{r['two_qubit_gates']} | {r['shots']:,} | {r['estimated_qpu_seconds']} | "
                f"{r['jobs']} | {r['wall_seconds']} |"
            )
    return "\n".join(lines) + "\n"


def write_section(path: Path, label: str, text: str) -> None:
    """Replace (or append) the section between ``<!-- compare:label -->`` markers."""
    begin, end = f"<!-- compare:{label} -->", f"<!-- /compare:{label} -->"
    block = f"{begin}\n{text}{end}\n"
    old = path.read_text(encoding="utf-8") if path.exists() else "# Hardware\n\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", re.S)
    new = pattern.sub(lambda _: block, old) if pattern.search(old) else old + "\n" + block
    path.write_text(new, encoding="utf-8")


def compare(
    run_dir: str,
    backends: list[str],
    methods: list[str],
    settings: ExecutionSettings,
    *,
    label: str,
    jobs_dir: str | Path,
    limit: int | None = None,
    data_dir: str | None = None,
    doc: str | Path | None = None,
    title: str | None = None,
    finished_only: bool = False,
) -> list[dict[str, Any]]:
    """Run (or read back) every device × method record; print and write the table as it grows.

    ``finished_only``: submit nothing, tabulate the records that already have their facts."""
    jobs_dir = Path(jobs_dir)
    jobs_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for backend in backends:
        for method in methods:
            name = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{label}-{backend}-{method}")
            if finished_only and not (jobs_dir / name / COMPARE_FILE).exists():
                print(f"{name}: not finished, left out", flush=True)
                continue
            rows.append(
                run_method(
                    run_dir,
                    backend,
                    method,
                    settings,
                    jobs_dir,
                    name,
                    limit=limit,
                    data_dir=data_dir,
                )
            )
            text = format_table(rows, title or label)
            print(text, flush=True)
            if doc is not None:
                write_section(Path(doc), label, text)
    return rows
