"""The ``qhqcnn`` command line: train, evaluate, and list what is available."""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from qhqcnn.errors import QhqcnnError

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


def _parse_backend_options(pairs: Sequence[str] | None) -> dict:
    options = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise QhqcnnError(f"--backend-option expects KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def add_backend_arguments(parser: argparse.ArgumentParser, default: str | None) -> None:
    """``--backend`` and ``--backend-option KEY=VALUE`` (shared by train and evaluate)."""
    parser.add_argument(
        "--backend",
        default=default,
        help="execution backend of the quantum layer: exact (fast statevector engine, default), "
        "statevector (Qiskit reference, slow), aer (noisy device simulation, see --noise); "
        "see `qhqcnn info`",
    )
    parser.add_argument(
        "--backend-option",
        action="append",
        metavar="KEY=VALUE",
        help="backend option (repeatable), e.g. device=cuda",
    )
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
        help="aer backend: transpiler optimization level (default 2)",
    )


def add_recipe_arguments(p: argparse.ArgumentParser) -> None:
    """The training recipe and architecture flags shared by ``train`` and ``reproduce``."""
    add_backend_arguments(p, "exact")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--lr",
        type=float,
        default=None,
        help="learning rate of the classical parameters (default 1e-3; qcnn and "
        "qcnn-classical 3e-2, chosen on validation)",
    )
    p.add_argument(
        "--quantum-lr",
        type=float,
        default=3e-2,
        help="learning rate of the circuit weights (default 3e-2, chosen on validation)",
    )
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument(
        "--augment",
        default="flip",
        choices=["flip", "none", "anatomy"],
        help="flip: random horizontal+vertical flips (default, as before); anatomy: the "
        "dataset's plausible flips only, small rotations and translations (docs/recipe.md)",
    )
    p.add_argument(
        "--class-balance",
        default="none",
        choices=["none", "weights", "sampler"],
        help="class imbalance: inverse-frequency loss weights (multi-label: pos_weight) or a "
        "class-balanced sampler (default none, as before)",
    )
    p.add_argument(
        "--loss",
        default="ce",
        choices=["ce", "ordinal"],
        help="ce (default) or ordinal: CE + squared EMD of the class CDFs (RetinaMNIST grades)",
    )
    p.add_argument("--patience", type=int, default=15, help="early-stopping patience (epochs)")
    p.add_argument("--qubits", type=int, default=4)
    p.add_argument("--layers", type=int, default=2, help="entangling layers of the circuit")
    p.add_argument(
        "--observables",
        default="zx",
        choices=["zx", "zx+zz"],
        help="hqcnn/classical read-out: <Z_i>,<X_i> (default) or also the ring's <Z_i Z_j> "
        "correlators (the bottleneck width is --qubits)",
    )
    p.add_argument(
        "--encoding",
        default="angle",
        choices=["angle", "superposition", "amplitude"],
        help="data encoding (amplitude: quanv and qcnn only)",
    )
    p.add_argument(
        "--quanv-filter",
        default="random",
        choices=["random", "trainable"],
        help="quanv: fixed random filter (Henderson et al., cached) or trainable n_local layers",
    )
    p.add_argument("--window", type=int, default=2, help="quanv: patch window k (k×k pixels)")
    p.add_argument("--stride", type=int, default=2, help="quanv: patch stride")
    p.add_argument("--filter-seed", type=int, default=0, help="quanv: random filter's seed")
    p.add_argument("--no-attention", action="store_true", help="drop the Fourier attention block")
    p.add_argument("--dropout", type=float, default=0.3)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument(
        "--device",
        default="auto",
        choices=["auto", "cpu", "cuda"],
        help="where the backbone and the quantum engine run (auto: CUDA when torch sees a GPU)",
    )
    p.add_argument(
        "--sync-batchnorm",
        action="store_true",
        help="torchrun: BatchNorm over the global batch (same updates as one process; slower) "
        "instead of each rank's share",
    )
    p.add_argument(
        "--size",
        type=int,
        default=28,
        choices=[28, 64, 128, 224],
        help="image size: 28 (MedMNIST v2) or MedMNIST+ 64/128/224 (<name>_<size>.npz, "
        "memory-mapped)",
    )
    p.add_argument("--max-train", type=int, default=None, help="use the first N training images")
    p.add_argument("--max-eval", type=int, default=None, help="use the first N val/test images")


def config_from_args(args: argparse.Namespace, *, dataset: str, model: str, seed: int):
    """The TrainConfig that the recipe flags in ``args`` describe."""
    from qhqcnn.config import ModelSpec, TrainConfig

    return TrainConfig(
        dataset=dataset.lower(),
        relabel=getattr(args, "relabel", None),
        model=ModelSpec(
            model=model,
            num_qubits=args.qubits,
            layers=args.layers,
            encoding=args.encoding,
            attention=not args.no_attention,
            dropout=args.dropout,
            quanv_filter=args.quanv_filter,
            window=args.window,
            stride=args.stride,
            filter_seed=args.filter_seed,
            observables=args.observables,
        ),
        backend=args.backend,
        backend_options=backend_options_from_args(args),
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        quantum_lr=args.quantum_lr,
        weight_decay=args.weight_decay,
        augment=args.augment,
        class_balance=args.class_balance,
        loss=args.loss,
        patience=args.patience,
        seed=seed,
        threads=args.threads,
        device=args.device,
        sync_batchnorm=args.sync_batchnorm,
        size=args.size,
        max_train=args.max_train,
        max_eval=args.max_eval,
    )


def backend_options_from_args(args: argparse.Namespace) -> dict:
    """Backend options given on the command line (``--backend-option KEY=VALUE``, and
    ``--noise``/``--shots``/``--optimization-level`` for ``--backend aer``)."""
    options = _parse_backend_options(args.backend_option)
    flags = {
        "noise": getattr(args, "noise", None),
        "shots": getattr(args, "shots", None),
        "optimization_level": getattr(args, "optimization_level", None),
    }
    given = {key: value for key, value in flags.items() if value is not None}
    if given and args.backend != "aer":
        names = ", ".join("--" + key.replace("_", "-") for key in given)
        got = args.backend or "none"
        raise QhqcnnError(f"{names} apply to --backend aer only (got --backend {got})")
    return {**options, **given}


def _train_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model and evaluate it on the test split")
    p.add_argument(
        "--dataset", default="breastmnist", help="MedMNIST dataset (default breastmnist)"
    )
    p.add_argument(
        "--relabel",
        default=None,
        help="binary variant: CLASS (one vs rest) or NEG,POS (class pair)",
    )
    p.add_argument(
        "--model",
        default="hqcnn",
        help="hqcnn (default), classical (its ablation), quanv (quanvolution), qcnn, the "
        "quanvolution family's classical twins quanv-classical, qcnn-classical, and the "
        "classical baselines backbone-head (no bottleneck) and resnet18 (28×28 ResNet-18)",
    )
    p.add_argument("--seed", type=int, default=0)
    add_recipe_arguments(p)
    p.add_argument(
        "--out", default=None, help="run directory (default runs/DATASET[-RELABEL]-MODEL-sSEED)"
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last finished epoch",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--cache-dir",
        default=None,
        help="quanv with a fixed filter: where quanvolved features are cached "
        "(default $QHQCNN_CACHE_DIR, else ~/.cache/qhqcnn)",
    )
    p.add_argument("--no-cache", action="store_true", help="quanv: no on-disk feature cache")
    _add_data_dir(p)
    p.set_defaults(handler=_cmd_train)


def default_run_dir(dataset: str, relabel: str | None, model: str, seed: int) -> Path:
    """``runs/DATASET[-RELABEL]-MODEL-sSEED``: relabelled variants never share a directory."""
    variant = f"-{re.sub(r'[^A-Za-z0-9]+', '', str(relabel))}" if relabel else ""
    return Path(f"runs/{dataset.lower()}{variant}-{model}-s{seed}")


def _cmd_train(args: argparse.Namespace) -> int:
    """Train (single process, or one rank of a ``torchrun`` job: rank 0 alone prints, writes
    and evaluates the test split)."""
    from qhqcnn.evaluation.evaluate import format_metrics_table
    from qhqcnn.training.distributed import barrier, current_context, shutdown
    from qhqcnn.training.pipeline import train

    out = Path(args.out or default_run_dir(args.dataset, args.relabel, args.model, args.seed))
    config = (
        None
        if args.resume
        else config_from_args(args, dataset=args.dataset, model=args.model, seed=args.seed)
    )
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
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
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
        help="comma-separated datasets (default: every one present in the data dir)",
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
        help="also copy the Markdown table here (results JSON beside it); by default nothing "
        "outside --out is written",
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
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--cache-dir",
        default=None,
        help="quanv with a fixed filter: where quanvolved features are cached "
        "(default $QHQCNN_CACHE_DIR, else ~/.cache/qhqcnn)",
    )
    p.add_argument("--no-cache", action="store_true", help="quanv: no on-disk feature cache")
    add_recipe_arguments(p)
    _add_data_dir(p)
    p.set_defaults(handler=_cmd_reproduce)


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from qhqcnn.study.reproduce import StudyPlan, present_datasets, run_study

    requested = args.datasets.split(",") if args.datasets else None
    present, missing = present_datasets(requested, args.data_dir)
    if missing:
        print(f"skipping (no file in the data directory): {', '.join(missing)}")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
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
        model_lr=args.lr is None,
    )
    study = run_study(
        plan,
        args.out,
        data_dir=args.data_dir,
        missing=missing,
        docs_path=args.docs,
        command=recorded_command(args.argv),
        progress=not args.no_progress,
        finished_only=args.finished_only,
        cache=not args.no_cache,
        cache_dir=args.cache_dir,
        workers=args.workers,
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qhqcnn",
        description="Hybrid quantum-classical CNNs for MedMNIST on Qiskit.",
    )
    from qhqcnn import __version__

    parser.add_argument("--version", action="version", version=f"qhqcnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in (_train_parser, _evaluate_parser, _reproduce_parser, _info_parser):
        add(sub)
    for target in COMMAND_GROUPS.values():
        module_name, func_name = target.split(":")
        register: Callable = getattr(__import__(module_name, fromlist=[func_name]), func_name)
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return int(args.handler(args) or 0)
    except QhqcnnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
