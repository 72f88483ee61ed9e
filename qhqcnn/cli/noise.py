"""``qhqcnn noise list`` and ``qhqcnn noise show NAME``."""

from __future__ import annotations

import argparse
import json
import math
import warnings
from typing import Any

from qhqcnn.errors import ConfigError


def register(subparsers) -> None:
    """Add the ``noise`` command group to the ``qhqcnn`` parser."""
    parser = subparsers.add_parser("noise", help="list and inspect noise models (aer backend)")
    sub = parser.add_subparsers(dest="noise_command", metavar="SUBCOMMAND")
    sub.required = True
    p = sub.add_parser("list", help="fake devices and parametric noise kinds")
    p.set_defaults(handler=_cmd_list)
    p = sub.add_parser(
        "show",
        help="basis gates, gate errors, T1/T2 and readout errors on the qubits a circuit uses",
    )
    p.add_argument("name", help="fake_torino, ibm_torino or a parametric spec")
    p.add_argument(
        "--qubits",
        default=None,
        help="comma-separated physical qubits (default: those the HQCNN circuit uses there)",
    )
    p.add_argument("--circuit-qubits", type=int, default=4, help="HQCNN width (default 4)")
    p.add_argument("--optimization-level", type=int, default=2, choices=[0, 1, 2, 3])
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(handler=_cmd_show)


def _cmd_list(args: argparse.Namespace) -> int:
    from qhqcnn.backends.devices import _fake_provider
    from qhqcnn.noise.models import PARAMETRIC_KINDS

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # calibration notes; deprecations show
        devices = sorted((b.name, b.num_qubits) for b in _fake_provider().backends())
    print(f"fake devices ({len(devices)}; NoiseModel.from_backend of their stored calibration):")
    for i in range(0, len(devices), 4):
        print("  " + "".join(f"{name:<20}{n:>4}q   " for name, n in devices[i : i + 4]))
    print("real devices: ibm_* names, with a configured QiskitRuntimeService (current calibration)")
    print("parametric kinds (join components with '+'; omitted keys take these defaults):")
    for kind, defaults in PARAMETRIC_KINDS.items():
        keys = ",".join(f"{k}={v:g}" for k, v in defaults.items() if not math.isnan(v))
        print(f"  {kind}:{keys}")
    print("  readout also takes p01=P(read 1|0), p10=P(read 0|1); 'ideal' = no noise")
    print("example: --backend aer --noise depolarizing:p1=0.001,p2=0.01+readout:p=0.02")
    return 0


def show_summary(name: str, qubits: list[int] | None, circuit_qubits: int, level: int) -> dict:
    """The ``describe_noise_model`` summary of ``name`` on the qubits a circuit uses there."""
    from qhqcnn.circuits import hqcnn_template
    from qhqcnn.noise.backend import AerBackend
    from qhqcnn.noise.models import describe_noise_model

    backend = AerBackend(noise=name, optimization_level=level, engine="aer")
    source = backend.source
    info: dict[str, Any] = {}
    if qubits is None:
        info = backend.prepare(hqcnn_template(circuit_qubits)).info
        qubits = info["physical_qubits"] if source.kind == "device" else None
        if qubits is None:  # parametric: same errors on every qubit of a generic line
            qubits = list(range(info["simulated_qubits"]))
    summary = describe_noise_model(source.model, qubits, backend=source.backend, name=source.name)
    summary["kind"] = source.kind
    if source.components:
        summary["components"] = [c.spec() for c in source.components]
    if info:
        summary["circuit"] = {
            k: info.get(k) for k in ("device", "layout", "depth", "two_qubit_gates", "gate_counts")
        }
    return summary


def _cmd_show(args: argparse.Namespace) -> int:
    qubits = None
    if args.qubits:
        try:
            qubits = [int(q) for q in args.qubits.split(",") if q.strip()]
        except ValueError:
            raise ConfigError(
                f"--qubits expects integers like 0,1,2, got {args.qubits!r}"
            ) from None
    summary = show_summary(args.name, qubits, args.circuit_qubits, args.optimization_level)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print(format_summary(summary))
    return 0


def format_summary(summary: dict) -> str:
    """A plain-text rendering of :func:`show_summary`'s dict."""
    lines = [f"noise {summary['name']} ({summary['kind']})"]
    if summary.get("ideal"):
        return "\n".join(lines + ["  ideal: no errors"])
    lines.append(f"  basis gates: {', '.join(summary['basis_gates'])}")
    lines.append(f"  noisy instructions: {', '.join(summary['noise_instructions'])}")
    for comp in summary.get("components", []):
        lines.append(f"  component: {comp}")
    circuit = summary.get("circuit")
    if circuit and circuit.get("layout"):
        lines.append(
            f"  HQCNN circuit: layout {circuit['layout']}, depth {circuit['depth']}, "
            f"{circuit['two_qubit_gates']} two-qubit gates"
        )
    for label, rate in summary["all_qubit_gate_errors"].items():
        lines.append(f"  {label:<8} all qubits   error {rate:.3e}")
    lines.append(f"  qubits {summary['qubits']}:")
    lines.append(f"    {'qubit':>5} {'T1 (us)':>9} {'T2 (us)':>9} {'P(1|0)':>8} {'P(0|1)':>8}")
    for q, entry in summary["per_qubit"].items():
        t1, t2 = entry.get("t1"), entry.get("t2")
        lines.append(
            f"    {q:>5} {_us(t1):>9} {_us(t2):>9} "
            f"{entry.get('readout_p01', 0.0):>8.4f} {entry.get('readout_p10', 0.0):>8.4f}"
        )
    for label, table in summary["gate_errors"].items():
        for qubits, rate in table.items():
            lines.append(f"  {label:<8} q{qubits:<11} error {rate:.3e}")
    return "\n".join(lines)


def _us(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e6:.1f}"
