"""Train then evaluate: the one pipeline behind ``qhqcnn train``, the study and the Python API."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qhqcnn.config import TrainConfig
from qhqcnn.data.arrays import ArrayDataset
from qhqcnn.errors import ConfigError
from qhqcnn.models.base import HybridModel, parameter_counts
from qhqcnn.training.rundir import RunDir
from qhqcnn.training.trainer import Trainer


@dataclass
class RunResult:
    """What :func:`train` produced.

    Attributes:
        run_dir: the run directory (config, history, checkpoints, metrics).
        config: the run's configuration.
        model: the trained model (its last epoch; ``best.pt`` holds the best one).
        best_epoch: the epoch with the best validation AUC.
        best_val_auc: that AUC.
        test: the test metrics record of the best checkpoint (``None`` without a test split,
            or on a non-zero rank under torchrun).
    """

    run_dir: RunDir
    config: TrainConfig
    model: HybridModel
    best_epoch: int
    best_val_auc: float
    test: dict[str, Any] | None


def _quiet(*_: Any, **__: Any) -> None:
    return None


def describe(trainer: Trainer) -> str:
    """One line: the model, its parameter counts, backend, device and run directory."""
    config, context = trainer.config, trainer.context
    counts = parameter_counts(trainer.model)
    ranks = f"; {context.world_size} ranks ({context.backend})" if context.enabled else ""
    return (
        f"{config.model.model} on {trainer.data.info.name}: {counts['classical']:,} classical + "
        f"{counts['quantum']} quantum parameters (head: {counts['head']}); "
        f"backend {config.backend}; device {trainer.device}{ranks}; run directory "
        f"{trainer.out_dir}"
    )


def train(
    config: TrainConfig,
    out: str | Path,
    *,
    data: ArrayDataset | None = None,
    data_dir: str | None = None,
    resume: bool = False,
    evaluate: bool = True,
    progress: bool | None = None,
    feature_cache: bool = True,
    cache_dir: str | Path | None = None,
    log: Callable[[str], Any] | None = print,
) -> RunResult:
    """Train ``config`` into the run directory ``out``, then evaluate its best checkpoint.

    This is what ``qhqcnn train`` runs; the run directory it writes is the same.

    Args:
        config: the run (model, recipe, seed, backend, device).
        out: the run directory; it must not hold a run unless ``resume`` is true.
        data: a user's own :class:`~qhqcnn.data.ArrayDataset`; ``None`` trains on the
            MedMNIST set ``config.dataset``.
        data_dir: where the MedMNIST files are.
        resume: continue the run in ``out`` after its last finished epoch (``config`` must be
            the saved one or ``None``-equivalent: the saved config is used).
        evaluate: evaluate the best checkpoint on the test split at the end.
        progress: per-batch progress bars (``None``: when stderr is a terminal).
        feature_cache: keep a fixed quanvolution filter's features in the on-disk cache.
        cache_dir: that cache (default ``$QHQCNN_CACHE_DIR``, else ``~/.cache/qhqcnn``).
        log: where progress lines go (``None`` for silence).

    Returns:
        a :class:`RunResult`.

    Example::

        from qhqcnn import ModelSpec, TrainConfig, train

        result = train(TrainConfig(dataset="breastmnist", model=ModelSpec("hqcnn")), "runs/b")
        print(result.test["acc"], result.test["auc"])
    """
    from qhqcnn.evaluation.evaluate import evaluate_run

    run_dir = RunDir(out)
    say = log or _quiet
    if resume:
        trainer = Trainer.resume(
            run_dir.path, data=data, data_dir=data_dir, progress=progress, log=log
        )
    else:
        if run_dir.exists():
            raise ConfigError(
                f"{run_dir.path} already holds a run; use --resume to continue it or another --out"
            )
        trainer = Trainer(
            config, run_dir.path, data=data, data_dir=data_dir, progress=progress, log=log
        )
    main = trainer.context.is_main
    if not main:
        say = _quiet
    if resume:
        say(f"resuming {run_dir.path} at epoch {trainer.start_epoch}")
    else:
        say(describe(trainer))
    if feature_cache:
        from qhqcnn.nn.feature_cache import precompute_for_trainer

        for line in precompute_for_trainer(trainer, cache_dir):
            say(line)
    best = trainer.fit()
    say(f"best validation AUC {best['best_val_auc']:.4f} at epoch {best['best_epoch']}")
    test = None
    has_test = data is None or "test" in data.splits
    if evaluate and main and has_test:
        test = evaluate_run(run_dir.path, "test", data=data, data_dir=data_dir)
    return RunResult(
        run_dir=run_dir,
        config=trainer.config,
        model=trainer.model,
        best_epoch=best["best_epoch"],
        best_val_auc=best["best_val_auc"],
        test=test,
    )
