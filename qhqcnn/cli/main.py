"""The ``qhqcnn`` command line: train, evaluate, and list what is available."""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from qhqcnn.errors import ConfigError, QhqcnnError

#: ``qhqcnn <group> ...`` commands contributed by other modules: name -> "module:register".
#: ``register(subparsers)`` adds the group's parser and sets ``handler`` defaults.
COMMAND_GROUPS: dict[str, str] = {
    "noise": "qhqcnn.cli.noise:register",
    "circuits": "qhqcnn.cli.circuits:register",
    "report": "qhqcnn.reporting.report:register",
    "hardware": "qhqcnn.cli.hardware:register",
}


def _add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        default=None,
        help="folder with the MedMNIST .npz files (default: $QHQCNN_DATA_DIR, else medmnist's "
        "own root ~/.medmnist); missing files are downloaded there when a network exists",
    )


def _backend_field_help() -> str:
    from qhqcnn.cli.options import option

    return option("backend").meta["help"]


def add_backend_arguments(parser: argparse.ArgumentParser, default: str | None) -> None:
    """``evaluate``'s ``--backend`` and ``--backend-option KEY=VALUE`` (``train`` and
    ``reproduce`` get theirs from the config fields), and the aer shortcuts."""
    parser.add_argument(
        "--backend",
        default=default,
        help=_backend_field_help() + " (default: the backend the run was trained with)",
    )
    parser.add_argument(
        "--backend-option",
        action="append",
        metavar="KEY=VALUE",
        help="backend option (repeatable), e.g. device=cuda; see docs/noise.md",
    )
    add_aer_shortcuts(parser)


def add_aer_shortcuts(parser: argparse.ArgumentParser) -> None:
    """``--noise``, ``--shots`` and ``--optimization-level``: ``--backend-option`` shortcuts."""
    parser.add_argument(
        "--noise",
        default=None,
        help="aer backend: device noise (fake_torino, ibm_torino) or a parametric spec such as "
        "depolarizing:p1=0.001,p2=0.01+readout:p=0.02; see `qhqcnn noise list`",
    )
    parser.add_argument(
        "--shots", type=int, default=None, help="aer backend: shots per expectation value"
    )
    parser.add_argument(
        "--optimization-level",
        type=int,
        default=None,
        choices=[0, 1, 2, 3],
        help="aer backend: transpiler optimization level (default: 2)",
    )


#: config keys that ``reproduce`` sets itself (from --datasets, --models, --seeds)
STUDY_KEYS = ("dataset", "relabel", "model.model", "seed")


def add_recipe_arguments(p: argparse.ArgumentParser, exclude: Sequence[str] = ()) -> None:
    """The training recipe and architecture flags (one per config field not in ``exclude``),
    the aer shortcuts and ``--config FILE``."""
    from qhqcnn.cli.options import add_config_arguments

    p.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="JSON or YAML file of TrainConfig keys (ModelSpec's nested under model:); the "
        "flags given override it; a run's config.json works too",
    )
    add_config_arguments(p, exclude)
    add_aer_shortcuts(p)


def recipe_values(args: argparse.Namespace, *, check_aer: bool = True) -> dict[str, Any]:
    """The config values of ``--config FILE`` overridden by the flags given (the aer shortcuts
    folded into ``backend_options``), by key; the fields given neither way are absent.
    ``check_aer``: refuse the aer shortcuts with another backend (``--resume`` compares them
    with the saved run instead, whose backend the flags need not repeat)."""
    from qhqcnn.cli.options import given_flags, load_config_file, value_of

    given = given_flags(args)
    shortcuts = {key: getattr(args, key, None) for key in ("noise", "shots", "optimization_level")}
    shortcuts = {key: value for key, value in shortcuts.items() if value is not None}
    if shortcuts:
        given["backend_options"] = {**given.get("backend_options", {}), **shortcuts}
    from_file = load_config_file(args.config) if getattr(args, "config", None) else {}
    values = {**from_file, **given}
    if "backend_options" in from_file and "backend_options" in given:
        values["backend_options"] = {**from_file["backend_options"], **given["backend_options"]}
    backend = value_of(values, "backend")
    if check_aer and shortcuts and backend != "aer":
        names = ", ".join("--" + key.replace("_", "-") for key in shortcuts)
        raise ConfigError(f"{names} apply to --backend aer only (got --backend {backend})")
    return values


def config_from_args(
    args: argparse.Namespace,
    *,
    dataset: str | None = None,
    model: str | None = None,
    seed: int | None = None,
):
    """The TrainConfig that ``--config FILE`` and the recipe flags in ``args`` describe
    (``dataset``, ``model`` and ``seed``, when given, replace theirs)."""
    from qhqcnn.cli.options import build_config

    values = recipe_values(args)
    for key, value in (("dataset", dataset), ("model.model", model), ("seed", seed)):
        if value is not None:
            values[key] = value
    if "dataset" in values:
        values["dataset"] = str(values["dataset"]).lower()
    return build_config(values)


def backend_options_from_args(args: argparse.Namespace) -> dict:
    """``evaluate``'s backend options (``--backend-option KEY=VALUE``, and
    ``--noise``/``--shots``/``--optimization-level`` for ``--backend aer``)."""
    from qhqcnn.cli.options import parse_backend_options

    options = parse_backend_options(args.backend_option)
    flags = {
        "noise": getattr(args, "noise", None),
        "shots": getattr(args, "shots", None),
        "optimization_level": getattr(args, "optimization_level", None),
    }
    given = {key: value for key, value in flags.items() if value is not None}
    if given and args.backend != "aer":
        names = ", ".join("--" + key.replace("_", "-") for key in given)
        got = args.backend or "none"
        raise ConfigError(f"{names} apply to --backend aer only (got --backend {got})")
    return {**options, **given}


def _add_cache_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bars (without a terminal on stderr there are none: one log line per "
        "epoch)",
    )
    p.add_argument(
        "--cache-dir",
        default=None,
        help="quanv with a fixed filter: where quanvolved features are cached "
        "(default: $QHQCNN_CACHE_DIR, else ~/.cache/qhqcnn)",
    )
    p.add_argument("--no-cache", action="store_true", help="quanv: no on-disk feature cache")


def _train_parser(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a model and evaluate it on the test split",
        description="Train a model and evaluate its best checkpoint on the test split. Every "
        "recipe flag is a field of qhqcnn.config.TrainConfig or ModelSpec (the defaults shown "
        "are theirs); --config FILE sets them from a file and the flags given override it.",
    )
    add_recipe_arguments(p)
    p.add_argument(
        "--out", default=None, help="run directory (default: runs/DATASET[-RELABEL]-MODEL-sSEED)"
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last finished epoch, with its saved config "
        "(recipe flags that differ from it are refused)",
    )
    _add_cache_arguments(p)
    _add_data_dir(p)
    p.set_defaults(handler=_cmd_train)


def default_run_dir(dataset: str, relabel: str | None, model: str, seed: int) -> Path:
    """``runs/DATASET[-RELABEL]-MODEL-sSEED``: relabelled variants never share a directory."""
    variant = f"-{re.sub(r'[^A-Za-z0-9]+', '', str(relabel))}" if relabel else ""
    return Path(f"runs/{dataset.lower()}{variant}-{model}-s{seed}")


def check_resume(out: Path, values: dict[str, Any]) -> None:
    """Refuse ``--resume`` with config values (flags or ``--config``) that differ from the
    saved run's, listing them."""
    from qhqcnn.cli.options import differences
    from qhqcnn.training.rundir import RunDir

    run_dir = RunDir(out)
    if not values or not run_dir.exists():
        return  # nothing to compare (train() says there is no run to resume)
    conflicts = differences(run_dir.config(), values)
    if conflicts:
        raise ConfigError(
            f"--resume continues {out} with its saved config; these settings differ from it: "
            f"{'; '.join(conflicts)}. Drop them to resume, or train into a new --out"
        )


def _cmd_train(args: argparse.Namespace) -> int:
    """Train (single process, or one rank of a ``torchrun`` job: rank 0 alone prints, writes
    and evaluates the test split)."""
    from qhqcnn.cli.options import value_of
    from qhqcnn.evaluation.evaluate import format_metrics_table
    from qhqcnn.training.distributed import barrier, current_context, shutdown
    from qhqcnn.training.pipeline import train

    values = recipe_values(args, check_aer=not args.resume)
    out = Path(
        args.out
        or default_run_dir(
            str(value_of(values, "dataset")),
            value_of(values, "relabel"),
            value_of(values, "model.model"),
            value_of(values, "seed"),
        )
    )
    if args.resume:
        check_resume(out, values)
        config = None
    else:
        config = config_from_args(args)
    try:
        result = train(
            config,
            out,
            data_dir=args.data_dir,
            resume=args.resume,
            progress=False if args.no_progress else None,
            feature_cache=not args.no_cache,
            cache_dir=args.cache_dir,
        )
    except KeyboardInterrupt:
        context = current_context()
        if context.is_main:
            print(
                f"\ninterrupted: {out / 'last.pt'} holds the last finished epoch; continue "
                f"with\n  qhqcnn train --resume --out {out}"
                + ("  (under the same torchrun command)" if context.enabled else ""),
                file=sys.stderr,
            )
        return 130
    if result.test is not None:
        print(format_metrics_table([result.test]))
    context = current_context()
    barrier(context)
    shutdown(context)
    return 0


def _evaluate_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="evaluate a trained run (best checkpoint) on a split")
    p.add_argument("run", help="run directory written by `qhqcnn train`")
    p.add_argument(
        "--split", default="test", choices=["train", "val", "test"], help="split to evaluate"
    )
    add_backend_arguments(p, None)
    _add_data_dir(p)
    p.set_defaults(handler=_cmd_evaluate)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from qhqcnn.evaluation.evaluate import evaluate_run, format_metrics_table

    result = evaluate_run(
        args.run,
        args.split,
        data_dir=args.data_dir,
        backend=args.backend,
        backend_options=backend_options_from_args(args),
    )
    print(format_metrics_table([result]))
    return 0


def _reproduce_parser(sub) -> None:
    p = sub.add_parser(
        "reproduce",
        help="train every model with every seed on every dataset present; write results tables",
    )
    p.add_argument(
        "--datasets",
        default=None,
        help="comma-separated datasets (default: every one present in the data directory)",
    )
    p.add_argument(
        "--models",
        default="hqcnn,classical",
        help="comma-separated models: hqcnn, classical, quanv, quanv-classical, qcnn, "
        "qcnn-classical, and the classical baselines backbone-head (no bottleneck) and resnet18; "
        "each quantum model is compared with its classical twin, and hqcnn/classical with the "
        "baselines, when both are given (default hqcnn,classical)",
    )
    p.add_argument(
        "--seeds",
        type=int,
        default=10,
        help="number of seeds (0..N-1); default 10: the exact two-sided Wilcoxon test cannot "
        "reach p < 0.05 with fewer than 6 pairs (its floor is 2/2^n)",
    )
    p.add_argument(
        "--eval-noise",
        default=None,
        help="also evaluate every quantum run under this device's noise (aer backend)",
    )
    p.add_argument("--out", default="runs/reproduce", help="study directory (resumable)")
    p.add_argument(
        "--docs",
        default=None,
        help="also copy the Markdown table here (results JSON beside it, its figure under "
        "figures/ there); by default nothing outside --out is written",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="run the (dataset, model, seed) cells in this many worker processes "
        "(each with --threads torch threads)",
    )
    p.add_argument(
        "--finished-only",
        action="store_true",
        help="train nothing: tabulate the cells that have test metrics, list the others as "
        "not run; each row's n says how many seeds it has",
    )
    p.add_argument(
        "--import-cells",
        action="append",
        default=[],
        metavar="RESULTS_JSON",
        help="also tabulate the finished cells recorded in another study's results.json (e.g. "
        "trained on another machine) and do not train them again; repeatable; a finished run "
        "under --out takes precedence; each table names the imported cells",
    )
    _add_cache_arguments(p)
    add_recipe_arguments(p, exclude=STUDY_KEYS)
    _add_data_dir(p)
    p.set_defaults(handler=_cmd_reproduce)


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from qhqcnn.study.imported import load_imported_cells
    from qhqcnn.study.reproduce import StudyPlan, present_datasets, run_study

    requested = args.datasets.split(",") if args.datasets else None
    present, missing = present_datasets(requested, args.data_dir)
    if missing:
        print(f"skipping (no file in the data directory): {', '.join(missing)}")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    values = recipe_values(args)
    recipe = config_from_args(
        args,
        dataset=present[0] if present else "breastmnist",
        model=models[0] if models else "hqcnn",
        seed=0,
    )
    plan = StudyPlan(
        present,
        models,
        list(range(args.seeds)),
        recipe,
        noise=args.eval_noise,
        model_lr="lr" not in values,
    )
    study = run_study(
        plan,
        args.out,
        data_dir=args.data_dir,
        missing=missing,
        docs_path=args.docs,
        command=recorded_command(args.argv),
        progress=False if args.no_progress else None,  # type: ignore[arg-type]  # None: on a TTY
        finished_only=args.finished_only,
        cache=not args.no_cache,
        cache_dir=args.cache_dir,
        workers=args.workers,
        imported=load_imported_cells(args.import_cells),
    )
    if study["not_run"]:
        print(f"{len(study['cells'])} finished cells tabulated; not run: {len(study['not_run'])}")
    also = f" and {args.docs}" if args.docs else ""
    print(f"results written to {args.out}/results.md{also}")
    return 0


def recorded_command(argv: Sequence[str]) -> str:
    """The command line as results record it: without ``--data-dir`` (where the verified files
    sit on one machine is not part of the result, and machine paths stay out of docs)."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--data-dir":
            skip = True
        elif not arg.startswith("--data-dir="):
            kept.append(shlex.quote(arg))
    return " ".join(["qhqcnn", *kept])


def _info_parser(sub) -> None:
    p = sub.add_parser("info", help="list datasets, models and backends")
    _add_data_dir(p)
    p.set_defaults(handler=_cmd_info)


def _cmd_info(args: argparse.Namespace) -> int:
    from qhqcnn.backends.base import available_backends
    from qhqcnn.data.medmnist import available_datasets, dataset_info, resolve_data_dir
    from qhqcnn.models import model_names

    data_dir = resolve_data_dir(args.data_dir)
    print(f"data directory: {data_dir}")
    print(f"{'dataset':<18}{'task':<28}{'classes':>8}{'channels':>9}  file")
    for name in available_datasets():
        info = dataset_info(name)
        present = "present" if (data_dir / info.file_name).exists() else "missing"
        print(f"{name:<18}{info.task:<28}{info.n_classes:>8}{info.n_channels:>9}  {present}")
    print(f"models: {', '.join(model_names())}")
    print(f"backends: {', '.join(available_backends())}")
    return 0


#: exit statuses that are not an error kind's own (``QhqcnnError.exit_code``)
EXIT_INTERNAL = 1
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell reports a reader that left


def exit_codes() -> list[tuple[int, str]]:
    """``(status, meaning)`` of every exit status the command line returns."""
    import qhqcnn.errors as errors

    kinds = [
        value
        for value in vars(errors).values()
        # a kind with its own status; subkinds that share their parent's status are its cases
        if isinstance(value, type) and issubclass(value, QhqcnnError) and "exit_code" in vars(value)
    ]
    rows = [
        (0, "success"),
        (EXIT_INTERNAL, "internal error (a bug) or an operating-system error such as a full disk"),
    ]
    for kind in sorted(kinds, key=lambda k: k.exit_code):
        doc = " ".join((kind.__doc__ or "").strip().split("\n\n")[0].split()).rstrip(".")
        if kind is QhqcnnError:
            doc = "a command-line usage error, or another qhqcnn error"
        rows.append((kind.exit_code, f"{kind.__name__}: {doc[:1].lower()}{doc[1:]}"))
    rows.append((EXIT_INTERRUPTED, "interrupted (Ctrl-C)"))
    return rows


def _epilog() -> str:
    codes = "\n".join(f"  {code:>3}  {meaning}" for code, meaning in exit_codes())
    return (
        "A failure prints one line 'error: ...' on stderr (--debug adds the traceback)\n"
        "and exits with the status of its kind:\n" + codes
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qhqcnn",
        description="Hybrid quantum-classical CNNs for MedMNIST on Qiskit.",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from qhqcnn import __version__

    parser.add_argument("--version", action="version", version=f"qhqcnn {__version__}")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in (_train_parser, _evaluate_parser, _reproduce_parser, _info_parser):
        add(sub)
    for target in COMMAND_GROUPS.values():
        module_name, func_name = target.split(":")
        register: Callable = getattr(__import__(module_name, fromlist=[func_name]), func_name)
        register(sub)
    from qhqcnn.cli.options import walk

    for command in list(walk(parser))[1:]:
        if "--debug" not in command._option_string_actions:
            # SUPPRESS: a subcommand's default must not undo ``qhqcnn --debug COMMAND``
            command.add_argument(
                "--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP
            )
    return parser


DEBUG_HELP = "on an error, show the Python traceback too"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``qhqcnn ARGV``; every failure becomes one ``error: ...`` line and an exit status by
    kind (:func:`exit_codes`), with the traceback under ``--debug``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv
    debug = bool(getattr(args, "debug", False))
    try:
        return int(args.handler(args) or 0)
    except QhqcnnError as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # ``qhqcnn info | head``: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except OSError as exc:  # the system refused (disk full, permission denied, ...)
        if debug:
            traceback.print_exc()
        where = "" if debug else " (--debug shows where)"
        print(f"error: {_one_line(str(exc))}{where}", file=sys.stderr)
        return EXIT_INTERNAL
    except Exception as exc:
        if debug:
            traceback.print_exc()
        where = "" if debug else "; rerun with --debug for the traceback"
        print(
            f"internal error: {type(exc).__name__}: {_one_line(str(exc))} (a bug in qhqcnn or "
            f"a library it uses; please report it{where})",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
