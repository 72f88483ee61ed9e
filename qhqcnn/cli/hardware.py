"""``qhqcnn hardware plan|submit|status|retrieve|report``: hardware validation commands."""

from __future__ import annotations

import argparse

from qhqcnn.cli.options import add_deprecated_backend_flag
from qhqcnn.hardware.settings import (
    CALIBRATIONS,
    DEFAULT_JOBS_DIR,
    MITIGATIONS,
    PRIMITIVES,
    SYNTHESES,
    SYNTHESIS_CHOICES,
    ExecutionSettings,
)


def _default(name: str):
    """``ExecutionSettings``' default of ``name``: the one place it is set."""
    return ExecutionSettings.__dataclass_fields__[name].default


def _setting(
    p: argparse.ArgumentParser,
    name: str,
    kind: type,
    help: str,
    *,
    show_default: bool = True,
    **kwargs,
) -> None:
    """``--NAME`` for the ``ExecutionSettings`` field ``name``, with its default from there."""
    default = _default(name)
    suffix = f" (default: {default})" if show_default else ""
    flag = "--" + name.replace("_", "-")
    p.add_argument(flag, type=kind, default=default, help=help + suffix, **kwargs)


def _add_job_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "run", help="run directory written by `qhqcnn train` (an hqcnn, qcnn or quanv model)"
    )
    device = p.add_mutually_exclusive_group(required=True)
    device.add_argument(
        "--ibm-backend",
        dest="ibm_backend",
        metavar="NAME",
        help="IBM Quantum device (ibm_torino, needs QISKIT_IBM_TOKEN or a saved account) or a "
        "fake one for local testing mode (fake_manila, fake_nairobi, fake_torino, ...)",
    )
    add_deprecated_backend_flag(device)
    p.add_argument(
        "--split", default="test", choices=["train", "val", "test"], help="split of the images"
    )
    p.add_argument("--limit", type=int, default=None, help="number of images (default: all)")
    p.add_argument("--offset", type=int, default=0, help="first image index of the split")
    # the defaults are ExecutionSettings' (the job manifest's record of how the circuits ran)
    _setting(p, "shots", int, "shots per parameter set")
    p.add_argument(
        "--mitigation",
        action="append",
        metavar="|".join(MITIGATIONS),
        help="error mitigation, repeatable or comma-separated "
        f"(default: {','.join(_default('mitigation'))})",
    )
    _setting(
        p,
        "resilience_level",
        int,
        "Runtime resilience level (default: 0 plus exactly the --mitigation techniques)",
        show_default=False,
        choices=[0, 1, 2],
    )
    _setting(
        p,
        "primitive",
        str,
        "executor (client-side) or legacy EstimatorV2; auto picks",
        choices=PRIMITIVES,
    )
    _setting(p, "max_params_per_pub", int, "parameter sets per PUB")
    _setting(p, "max_pubs_per_job", int, "PUBs per job (chunk)")
    _setting(p, "optimization_level", int, "transpiler optimization level", choices=[0, 1, 2, 3])
    _setting(p, "seed_transpiler", int, "transpiler seed")
    p.add_argument(
        "--no-transpile-search",
        action="store_true",
        help="one preset transpilation instead of the best of several scored by the device's "
        "calibrated errors",
    )
    _setting(p, "search_seeds", int, "transpiler seeds per gate order (default: per device)",
             show_default=False)  # fmt: skip
    _setting(p, "search_orders", int, "commutation-equivalent gate orders tried (default: per "
             "device)", show_default=False)  # fmt: skip
    _setting(
        p,
        "approximation_degree",
        float,
        "approximate synthesis (< 1), kept only within --max-approx-error of exact values",
        show_default=False,
    )
    _setting(p, "max_approx_error", float, "largest output change an approximation may make")
    _setting(
        p,
        "synthesis",
        str,
        "aqc: compile the trained circuit's fixed part (all gates after the encoding, weights "
        "bound) into a CNOT network on a line of qubits, kept only if its stated output bound "
        "is within --max-approx-error",
        choices=SYNTHESES,
    )
    _setting(p, "synthesis_cnots", int, "CNOTs of the synthesized network (default: the fewest "
             "of 61-66 that meet the bound)", show_default=False)  # fmt: skip
    _setting(
        p,
        "synthesis_choice",
        str,
        "how an accepted synthesis is weighed against the best searched circuit (both scored "
        "on training images): noisy = lower predicted output error under the device's noise "
        "model, esp = higher estimated success probability, always = run the synthesis",
        choices=SYNTHESIS_CHOICES,
    )
    _setting(
        p,
        "calibration",
        str,
        "affine: fit each output's scale and shift on training images run in the same "
        "Batch and map the measured values back before the trained layers (never test images)",
        show_default=False,
        choices=CALIBRATIONS,
    )
    _setting(p, "calibration_images", int, "training images of the calibration")
    _setting(p, "seed_simulator", int, "seed of local simulations (fake devices only)",
             show_default=False)  # fmt: skip
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
        transpile_search=not args.no_transpile_search,
        search_seeds=args.search_seeds,
        search_orders=args.search_orders,
        approximation_degree=args.approximation_degree,
        max_approx_error=args.max_approx_error,
        synthesis=args.synthesis,
        synthesis_cnots=args.synthesis_cnots,
        synthesis_choice=args.synthesis_choice,
        calibration=args.calibration,
        calibration_images=args.calibration_images,
    )


def _plan(args: argparse.Namespace):
    from qhqcnn.hardware.plan import build_plan

    return build_plan(
        args.run,
        args.ibm_backend,
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


def _cmd_counts(args: argparse.Namespace) -> int:
    from qhqcnn.hardware.counts import all_templates, count_rows, format_rows

    search = {"seeds": args.search_seeds, "orders": args.search_orders}
    synthesis, weights, templates = None, None, args.template or all_templates()
    if args.synthesis != "none":
        synthesis = ExecutionSettings(
            synthesis=args.synthesis,
            synthesis_cnots=args.synthesis_cnots,
            max_approx_error=args.max_approx_error,
        ).synthesis_options()
    if args.run is not None:
        from qhqcnn.hardware.features import load_run_inputs

        inputs = load_run_inputs(args.run, "train", limit=1, data_dir=args.data_dir)
        name = inputs.spec.model
        weights = {name: inputs.weights}
        templates = args.template or [name]
    rows = count_rows(
        templates,
        args.ibm_backend,
        search=search,
        check=not args.no_check,
        synthesis=synthesis,
        weights=weights,
    )
    print(format_rows(rows))
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from qhqcnn.hardware.compare import compare

    args.mitigation = None
    settings = _settings(args)
    compare(
        args.run,
        [args.ibm_backend, *args.also_ibm_backend],
        args.method or ["none", "trex", "trex+dd", "trex+twirling", "trex+zne"],
        settings,
        label=args.label,
        jobs_dir=args.jobs_dir,
        limit=args.limit,
        data_dir=args.data_dir,
        doc=None if args.doc == "-" else args.doc,
        title=args.title,
        finished_only=args.finished_only,
    )
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
    p.add_argument("--name", default=None, help="job record name (default: RUN-DEVICE-DATE)")
    p.add_argument("--wait", action="store_true", help="wait for the results before returning")
    p.set_defaults(handler=_cmd_submit)

    p = sub.add_parser(
        "counts",
        help="two-qubit gates and depth per template and device: preset transpilation vs search",
    )
    p.add_argument(
        "--ibm-backend",
        action="append",
        required=True,
        help="IBM Quantum device or fake one (repeatable)",
    )
    p.add_argument("--template", action="append", default=None, help="template (default: all)")
    p.add_argument("--search-seeds", type=int, default=None, help="transpiler seeds per order")
    p.add_argument(
        "--search-orders", type=int, default=None, help="commutation-equivalent gate orders"
    )
    p.add_argument("--no-check", action="store_true", help="skip the exact-values check")
    _setting(
        p,
        "synthesis",
        str,
        "also count the circuit with its fixed part synthesized (weights bound: the --run's "
        "trained ones, else initial ones)",
        choices=SYNTHESES,
    )
    _setting(p, "synthesis_cnots", int, "CNOTs of the synthesized network (default: the fewest "
             "of 61-66 that meet the bound)", show_default=False)  # fmt: skip
    _setting(p, "max_approx_error", float, "largest stated output change a synthesis may make")
    p.add_argument(
        "--run",
        default=None,
        help="trained run whose weights the synthesis binds (default templates: its model's)",
    )
    p.add_argument("--data-dir", default=None, help="MedMNIST data directory (with --run)")
    p.set_defaults(handler=_cmd_counts)

    p = sub.add_parser(
        "compare",
        help="the same model and images through each mitigation method (raw and calibrated "
        "readout); writes a table",
    )
    _add_job_arguments(p)
    p.add_argument(
        "--also-ibm-backend", action="append", default=[], help="more devices (repeatable)"
    )
    p.add_argument(
        "--method",
        action="append",
        default=None,
        help="none, trex, trex+dd, twirling, trex+zne, ... (repeatable; default: none, trex, "
        "trex+dd, trex+twirling, trex+zne)",
    )
    p.add_argument("--label", required=True, help="name of this comparison (records, doc section)")
    p.add_argument("--title", default=None, help="heading of the table")
    p.add_argument("--jobs-dir", default=DEFAULT_JOBS_DIR, help="parent of job records")
    p.add_argument("--doc", default="docs/hardware.md", help="Markdown file of the table (- none)")
    p.add_argument(
        "--finished-only", action="store_true", help="submit nothing: tabulate finished records"
    )
    p.set_defaults(handler=_cmd_compare, calibration="affine")
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
