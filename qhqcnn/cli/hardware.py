"""``qhqcnn hardware plan|submit|status|retrieve|report``: hardware validation commands."""

from __future__ import annotations

import argparse

from qhqcnn.hardware.settings import (
    DEFAULT_JOBS_DIR,
    MITIGATIONS,
    PRIMITIVES,
    ExecutionSettings,
)


def _add_job_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "run", help="run directory written by `qhqcnn train` (an hqcnn, qcnn or quanv model)"
    )
    p.add_argument(
        "--backend",
        required=True,
        help="IBM Quantum device (ibm_torino, needs QISKIT_IBM_TOKEN or a saved account) or a "
        "fake one for local testing mode (fake_manila, fake_nairobi, fake_torino, ...)",
    )
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--limit", type=int, default=None, help="number of images (default: all)")
    p.add_argument("--offset", type=int, default=0, help="first image index of the split")
    p.add_argument("--shots", type=int, default=4096, help="shots per parameter set (4096)")
    p.add_argument(
        "--mitigation",
        action="append",
        metavar="|".join(MITIGATIONS),
        help="error mitigation, repeatable or comma-separated (default trex)",
    )
    p.add_argument(
        "--resilience-level",
        type=int,
        choices=[0, 1, 2],
        default=None,
        help="Runtime resilience level (default: 0 plus exactly the --mitigation techniques)",
    )
    p.add_argument(
        "--primitive",
        default="auto",
        choices=PRIMITIVES,
        help="executor (client-side, default) or legacy EstimatorV2; auto picks",
    )
    p.add_argument("--max-params-per-pub", type=int, default=500, help="parameter sets per PUB")
    p.add_argument("--max-pubs-per-job", type=int, default=1, help="PUBs per job (chunk)")
    p.add_argument("--optimization-level", type=int, default=2, choices=[0, 1, 2, 3])
    p.add_argument("--seed-transpiler", type=int, default=1234)
    p.add_argument(
        "--seed-simulator", type=int, default=None, help="seed of local simulations (fake only)"
    )
    p.add_argument("--data-dir", default=None, help="MedMNIST data directory")


def _settings(args: argparse.Namespace) -> ExecutionSettings:
    from qhqcnn.hardware.settings import parse_mitigation

    return ExecutionSettings(
        shots=args.shots,
        mitigation=parse_mitigation(args.mitigation),
        resilience_level=args.resilience_level,
        primitive=args.primitive,
        max_params_per_pub=args.max_params_per_pub,
        max_pubs_per_job=args.max_pubs_per_job,
        optimization_level=args.optimization_level,
        seed_transpiler=args.seed_transpiler,
        seed_simulator=args.seed_simulator,
    )


def _plan(args: argparse.Namespace):
    from qhqcnn.hardware.plan import build_plan

    return build_plan(
        args.run,
        args.backend,
        _settings(args),
        split=args.split,
        limit=args.limit,
        offset=args.offset,
        data_dir=args.data_dir,
    )


def _cmd_plan(args: argparse.Namespace) -> int:
    from qhqcnn.hardware.plan import format_plan

    print(format_plan(_plan(args)))
    return 0


def _cmd_submit(args: argparse.Namespace) -> int:
    from qhqcnn.hardware.plan import format_plan
    from qhqcnn.hardware.retrieve import chunk_states, format_states
    from qhqcnn.hardware.submit import submit

    plan = _plan(args)
    print(format_plan(plan).replace("nothing was submitted", "submitting…"))
    if plan.local:
        print("local testing mode: jobs run in this process, so submit waits for their results")
    record = submit(plan, args.jobs_dir, name=args.name, wait=True if args.wait else None)
    print(format_states(record, chunk_states(record, service=plan.service)))
    print(f"job record: {record.path}")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from qhqcnn.hardware.manifest import load_record
    from qhqcnn.hardware.retrieve import chunk_states, format_states

    states = chunk_states(args.job_dir)
    print(format_states(load_record(args.job_dir), states))
    return 0


def _cmd_retrieve(args: argparse.Namespace) -> int:
    from qhqcnn.hardware.retrieve import chunk_states, format_states, retrieve

    record = retrieve(args.job_dir, resubmit=not args.no_resubmit, wait=args.wait)
    print(format_states(record, chunk_states(record, live=False)))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from qhqcnn.hardware.report import REPORT_MD, build_report

    report = build_report(
        args.job_dir, noise=args.noise, noisy=not args.no_noisy, allow_partial=args.partial
    )
    for source in report["comparison"]["sources"].values():
        print(
            f"{source['label']:<26} ACC {source['acc']:.4f}  AUC {source['auc']:.4f}  "
            f"agreement {source['agreement_with_exact']:.3f}  MAE {source['mae_vs_exact']:.4f}"
        )
    print(f"report: {args.job_dir}/{REPORT_MD}")
    return 0


def register(subparsers) -> None:
    """Add ``qhqcnn hardware …`` to the main parser."""
    hardware = subparsers.add_parser(
        "hardware", help="validate a trained run on IBM Quantum hardware (or a fake device)"
    )
    sub = hardware.add_subparsers(dest="hardware_command", metavar="ACTION")
    sub.required = True

    p = sub.add_parser("plan", help="show what would be sent; submits nothing")
    _add_job_arguments(p)
    p.set_defaults(handler=_cmd_plan)

    p = sub.add_parser("submit", help="submit and return with a job record directory")
    _add_job_arguments(p)
    p.add_argument("--jobs-dir", default=DEFAULT_JOBS_DIR, help="parent of job records")
    p.add_argument("--name", default=None, help="job record name (default: run-backend-date)")
    p.add_argument("--wait", action="store_true", help="wait for the results before returning")
    p.set_defaults(handler=_cmd_submit)

    p = sub.add_parser("status", help="state of each chunk's job (writes nothing)")
    p.add_argument("job_dir", help="job record directory")
    p.set_defaults(handler=_cmd_status)

    p = sub.add_parser(
        "retrieve", help="save finished results; resubmit missing/failed/cancelled chunks"
    )
    p.add_argument("job_dir", help="job record directory")
    p.add_argument("--no-resubmit", action="store_true", help="only fetch, never resubmit")
    p.add_argument("--wait", action="store_true", help="wait for running jobs to finish")
    p.set_defaults(handler=_cmd_retrieve)

    p = sub.add_parser("report", help="hardware vs exact vs noisy simulation (Markdown + PNG)")
    p.add_argument("job_dir", help="job record directory")
    p.add_argument("--noise", default=None, help="noise model of the simulation (fake device)")
    p.add_argument("--no-noisy", action="store_true", help="skip the noisy simulation")
    p.add_argument("--partial", action="store_true", help="report on the chunks with results")
    p.set_defaults(handler=_cmd_report)
