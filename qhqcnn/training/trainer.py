"""Training: AdamW + cosine schedule, best checkpoint by validation AUC, early stopping, resume.

Run directory (``--out``)::

    config.json      the TrainConfig, data provenance, parameter counts, circuit, environment
    history.json     one record per finished epoch (train/val loss, ACC, AUC, lr, seconds of the
                     epoch and of its training part)
    last.pt          resumable state after the last finished epoch (model, optimizer, RNG, …)
    best.pt          model weights of the epoch with the best validation AUC
    metrics_test.json, predictions_test.npz   written by evaluation at the end

Every file is written atomically. Ctrl-C keeps ``last.pt``; ``--resume`` re-runs the interrupted
epoch from its start with the saved RNG state, so the result equals an uninterrupted run.

Under ``torchrun`` (:mod:`qhqcnn.training.distributed`) every rank trains its shard of each
global batch
through DistributedDataParallel; metrics are computed on the predictions gathered from all ranks,
so every rank takes the same best-checkpoint and early-stopping decisions, and only rank 0 writes.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from qhqcnn.backends.base import make_backend
from qhqcnn.config import TrainConfig
from qhqcnn.data.arrays import ArrayDataset
from qhqcnn.data.batches import (
    ImageSource,
    MappedImages,
    images_to_tensor,
    labels_to_tensor,
    train_batches,
)
from qhqcnn.data.medmnist import IMAGE_SIZE, SPLITS, DatasetInfo, Relabel, load_split
from qhqcnn.errors import (
    ConfigError,
    DataError,
    IntegrityError,
    RunNotFoundError,
    TrainingError,
)
from qhqcnn.io.files import atomic_write_json, environment_record
from qhqcnn.models import HybridModel, build_model, parameter_counts
from qhqcnn.nn.quantum_layer import QuantumLayer
from qhqcnn.training.distributed import (
    SINGLE_PROCESS,
    DistributedContext,
    convert_batchnorm,
    gather_rows,
    init_distributed,
    resolve_device,
    wrap_model,
)
from qhqcnn.training.memory import check_memory
from qhqcnn.training.metrics import medmnist_metrics, scores_from_logits
from qhqcnn.training.rundir import RunDir, TensorBoardLog, load_model_state
from qhqcnn.training.scoring import score_split


@dataclass
class SplitTensors:
    images: ImageSource  # float (N, C, H, W) in [-1, 1], in RAM or read on demand (MedMNIST+)
    labels: torch.Tensor


@dataclass
class PreparedData:
    info: DatasetInfo
    splits: dict[str, SplitTensors]


def load_data(
    config: TrainConfig,
    data_dir: str | None = None,
    splits: tuple[str, ...] = SPLITS,
    *,
    data: ArrayDataset | None = None,
) -> PreparedData:
    """Load the config's dataset (relabelled if asked) as normalised tensors; MedMNIST+ sizes
    are memory-mapped and converted batch by batch. ``data``: a user's own dataset instead of
    the MedMNIST set ``config.dataset``."""
    if data is not None:
        return _array_data(config, data, splits)
    relabel = Relabel.parse(config.relabel) if config.relabel else None
    mapped = config.size > IMAGE_SIZE
    tensors, info = {}, None
    for split in splits:
        data = load_split(
            config.dataset, split, data_dir, relabel=relabel, size=config.size, mmap=mapped
        )
        limit = config.max_train if split == "train" else config.max_eval
        images, labels = data.images[:limit], data.labels[:limit]
        info = data.info
        tensors[split] = SplitTensors(
            MappedImages(images) if mapped else images_to_tensor(images),
            labels_to_tensor(labels, info.task),
        )
    assert info is not None
    return PreparedData(info=info, splits=tensors)


def _array_data(config: TrainConfig, data: ArrayDataset, splits: tuple[str, ...]) -> PreparedData:
    info = data.info
    tensors = {}
    for split in splits:
        if split not in data.splits:
            raise DataError(f"the dataset {data.name!r} has no {split} split")
        images, labels = data.splits[split]
        limit = config.max_train if split == "train" else config.max_eval
        tensors[split] = SplitTensors(
            images_to_tensor(images[:limit]), labels_to_tensor(labels[:limit], info.task)
        )
    return PreparedData(info=info, splits=tensors)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


#: Backends whose quantum engine can run on CUDA (``device`` option).
CUDA_BACKENDS = ("exact", "aer")


def model_for_config(
    config: TrainConfig, info: DatasetInfo, backend=None, device: torch.device | None = None
) -> HybridModel:
    """The model a config describes, on ``backend`` (default: the config's own backend, with its
    engine on ``device`` when that is CUDA and the backend supports it).

    Refuses (:class:`~qhqcnn.errors.ConfigError`) before allocating anything when the
    configuration needs more memory than is available (:func:`~qhqcnn.training.memory.
    check_memory`; ``config.allow_large_memory`` overrides).
    """
    check_memory(config, info, backend=backend)
    if backend is None and config.model.is_quantum:
        options = dict(config.backend_options)
        if device is not None and device.type == "cuda" and config.backend in CUDA_BACKENDS:
            options.setdefault("device", "cuda")
        backend = make_backend(config.backend, **options)
    return build_model(
        config.model,
        info.n_channels,
        info.n_classes,
        backend,
        seed=config.seed,
        image_size=info.size,
    )


def parameter_groups(model: torch.nn.Module, config: TrainConfig) -> list[dict[str, Any]]:
    """Classical parameters at ``lr``; circuit weights at ``quantum_lr`` without weight decay
    (they are angles: decaying them towards 0 has no meaning)."""
    quantum = {
        id(p) for m in model.modules() if isinstance(m, QuantumLayer) for p in m.parameters()
    }
    classical = [p for p in model.parameters() if id(p) not in quantum]
    groups: list[dict[str, Any]] = [{"params": classical}]
    circuit = [p for p in model.parameters() if id(p) in quantum]
    if circuit:
        groups.append(
            {"params": circuit, "lr": config.quantum_lr or config.lr, "weight_decay": 0.0}
        )
    return groups


def _rng_state() -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def _rank_generator_seed(seed: int, epoch: int, rank: int) -> int:
    """Seed of rank ``rank``'s dropout RNG in ``epoch`` (rank 0 keeps the single-process stream)."""
    return (seed * 1_000_003 + epoch) * 7919 + rank


def _describe_run(
    config: TrainConfig,
    data: PreparedData,
    model: HybridModel,
    context: DistributedContext = SINGLE_PROCESS,
    device: torch.device | None = None,
) -> dict[str, Any]:
    info = data.info
    record: dict[str, Any] = {
        "config": config.to_dict(),
        "data": {
            "dataset": info.name,
            "task": info.task,
            "n_classes": info.n_classes,
            "n_channels": info.n_channels,
            "label_names": info.label_names,
            "file": info.file_name if info.url else None,
            "md5": info.md5,
            "n_images": {k: int(v.images.shape[0]) for k, v in data.splits.items()},
        },
        "parameters": parameter_counts(model),
        "execution": {"device": str(device or "cpu"), **context.describe()},
        "environment": environment_record(),
    }
    head = model.head
    if hasattr(head, "template"):
        record["circuit"] = head.template.summary()
        record["circuit"]["backend"] = {"name": head.backend.name, **head.prepared.info}
    return record


def _medical_options(config: TrainConfig, data: PreparedData, context: DistributedContext):
    """The training loss (class weights, ordinal), the balanced sampler's per-image weights and
    the anatomy-aware augmentation policy that ``config`` asks for."""
    from qhqcnn.training import medical

    info, labels = data.info, data.splits["train"].labels
    if config.loss == "ordinal" and info.task == medical.MULTI_LABEL:
        raise ConfigError("the ordinal loss is for single-label tasks (not multi-label)")
    weights = sampling = None
    if config.class_balance == "weights":
        weights = medical.class_weights(labels, info.task, info.n_classes)
    elif config.class_balance == "sampler":
        if info.task == medical.MULTI_LABEL:
            raise ConfigError("class_balance=sampler is for single-label tasks; use weights")
        if context.enabled:
            raise ConfigError("class_balance=sampler runs in one process only")
        sampling = medical.sample_weights(labels, info.task, info.n_classes)
    loss = medical.training_loss(info.task, loss=config.loss, weights=weights)
    policy = medical.augment_policy(config.dataset) if config.augment == "anatomy" else None
    return loss, sampling, policy


class Trainer:
    """Owns one run directory: builds everything from the config and trains it to the end.

    Args:
        config: the run (model, recipe, seed, device).
        out_dir: the run directory (:class:`~qhqcnn.training.RunDir`).
        data: a user's own dataset; ``None`` loads the MedMNIST set ``config.dataset``.
        data_dir: where the MedMNIST files are (default ``$QHQCNN_DATA_DIR``, ``~/.medmnist``).
        progress: progress bars per batch; ``None`` (default) shows them when stderr is a
            terminal and otherwise logs one line per epoch.
        log: where the line per epoch goes (``None``: nowhere).
    """

    def __init__(
        self,
        config: TrainConfig,
        out_dir: str | Path,
        *,
        data: ArrayDataset | None = None,
        data_dir: str | None = None,
        progress: bool | None = None,
        log: Callable[[str], Any] | None = print,
    ) -> None:
        self.config = config
        self.log = log
        self.run_dir = RunDir(out_dir)
        self.out_dir = self.run_dir.path
        self.data_dir = data_dir
        self.device = resolve_device(config.device)
        self.context = init_distributed(self.device)
        if progress is None:
            progress = sys.stderr.isatty()
        self.progress = progress and self.context.is_main
        if self.context.enabled and config.batch_size % self.context.world_size:
            raise ConfigError(
                f"batch size {config.batch_size} (the global batch) must be divisible by the "
                f"{self.context.world_size} ranks"
            )
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        if config.threads:
            torch.set_num_threads(config.threads)
        splits = SPLITS if data is None or "test" in data.splits else ("train", "val")
        self.data = load_data(config, data_dir, splits, data=data)
        seed_everything(config.seed)
        model = model_for_config(config, self.data.info, device=self.device).to(self.device)
        if self.context.enabled and config.sync_batchnorm:
            model = convert_batchnorm(model, self.device)
        self.model = model
        self.train_model = wrap_model(model, self.context, self.device)
        self.loss_fn, self.sample_weights, self.augment_policy = _medical_options(
            config, self.data, self.context
        )
        self.loss_fn = self.loss_fn.to(self.device)
        self.optimizer = torch.optim.AdamW(
            parameter_groups(self.model, config), lr=config.lr, weight_decay=config.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optimizer, T_max=config.epochs
        )
        self.history: list[dict[str, Any]] = []
        self.best_auc = -np.inf
        self.best_epoch = 0
        self.start_epoch = 1

    # -- persistence -------------------------------------------------------------------------
    @classmethod
    def resume(
        cls,
        out_dir: str | Path,
        *,
        data: ArrayDataset | None = None,
        data_dir: str | None = None,
        progress: bool | None = None,
        log: Callable[[str], Any] | None = print,
    ) -> Trainer:
        """Rebuild a run from its saved config and continue after its last finished epoch.

        A run trained on a user's own dataset needs the same ``data`` again (its checksum is
        compared with the one recorded).
        """
        run_dir = RunDir(out_dir)
        if not run_dir.exists():
            raise RunNotFoundError(f"no run to resume at {run_dir.path} ({RunDir.CONFIG} missing)")
        record = run_dir.record()
        recorded = record.get("data", {}).get("md5")
        if data is not None and recorded and data.fingerprint() != recorded:
            raise DataError(f"the data given differ from the data {run_dir.path} was trained on")
        config = run_dir.config()
        trainer = cls(
            config, run_dir.path, data=data, data_dir=data_dir, progress=progress, log=log
        )
        trainer._resume_from_checkpoint()
        return trainer

    def _resume_from_checkpoint(self) -> None:
        """Load ``last.pt``, or ``previous.pt`` when ``last.pt`` is missing or fails its hash;
        then rebuild ``history.json`` from the checkpoint (a kill during the last epoch's writes
        can leave it one epoch short)."""
        run_dir, say = self.run_dir, self.log or (lambda _: None)
        candidates = [run_dir.last_checkpoint, run_dir.previous_checkpoint]
        present = [path for path in candidates if path.exists()]
        problems = []
        for path in present:
            try:
                self._load_checkpoint(path)
            except IntegrityError as exc:
                problems.append(str(exc))
                continue
            if path != run_dir.last_checkpoint and self.context.is_main:
                reason = problems[0] if problems else f"{run_dir.LAST} is missing"
                say(f"warning: {reason}; resuming from {path.name} (epoch {self.start_epoch - 1})")
            break
        else:
            if problems:
                raise IntegrityError(
                    "no checkpoint of this run can be loaded, so it cannot be resumed: "
                    + "; ".join(problems)
                )
        if self.context.is_main and (present or run_dir.history_path.exists()):
            if run_dir.history() != self.history:
                run_dir.write_history(self.history)

    def _save_checkpoint(self, epoch: int) -> None:
        if not self.context.is_main:
            return
        self.run_dir.save_checkpoint(
            self.run_dir.last_checkpoint,
            {
                "epoch": epoch,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "best_auc": self.best_auc,
                "best_epoch": self.best_epoch,
                "history": self.history,
                "rng": _rng_state(),
            },
            keep_previous=self.run_dir.previous_checkpoint,
        )
        self.run_dir.write_history(self.history)

    def _load_checkpoint(self, path: Path) -> None:
        state = self.run_dir.load_checkpoint(path)
        load_model_state(self.model, state, path)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            best_auc, best_epoch = state["best_auc"], state["best_epoch"]
            history, epoch, rng = list(state["history"]), int(state["epoch"]), state["rng"]
            _set_rng_state(rng)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise IntegrityError(
                f"{path} is not a resumable checkpoint of this run ({type(exc).__name__}: {exc})"
            ) from exc
        self.model.to(self.device)
        self.best_auc, self.best_epoch = best_auc, best_epoch
        self.history, self.start_epoch = history[:epoch], epoch + 1

    # -- training ----------------------------------------------------------------------------
    def _train_epoch(self, epoch: int) -> dict[str, float]:
        config, train, context = self.config, self.data.splits["train"], self.context
        self.train_model.train()
        if context.rank > 0:  # rank 0 continues the (checkpointed) single-process stream
            torch.manual_seed(_rank_generator_seed(config.seed, epoch, context.rank))
        batches = train_batches(
            train.images,
            train.labels,
            config.batch_size,
            config.seed,
            epoch,
            augment=config.augment,
            rank=context.rank,
            world_size=context.world_size,
            policy=self.augment_policy,
            weights=self.sample_weights,
        )
        n_batches = max(1, train.images.shape[0] // config.batch_size)
        totals = torch.zeros(2, dtype=torch.float64)  # summed loss, images seen
        seen_logits, seen_labels = [], []
        bar = tqdm(
            batches,
            total=n_batches,
            desc=f"epoch {epoch}/{config.epochs}",
            leave=False,
            disable=not self.progress,
            unit="batch",
        )
        for step, (images, labels) in enumerate(bar):
            images, labels = images.to(self.device), labels.to(self.device)
            logits = self.train_model(images)
            loss = self.loss_fn(logits, labels)
            value = loss.item()
            if not torch.isfinite(logits.detach()).all():
                value = float("nan")  # non-finite predictions: diverged even if the loss is not
            step_loss = torch.tensor([value], dtype=torch.float64)
            if context.enabled:  # every rank stops together on a non-finite loss anywhere
                torch.distributed.all_reduce(step_loss)
            if not torch.isfinite(step_loss).all():
                raise TrainingError(
                    f"non-finite loss or predictions ({value}) at epoch {epoch}, batch {step} "
                    f"(divergence); training stopped and the last good checkpoint "
                    f"({self.run_dir.last_checkpoint}, epoch {epoch - 1}) is kept. Try a lower "
                    "--lr / --quantum-lr."
                )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            totals += torch.tensor([value * images.shape[0], images.shape[0]])
            seen_logits.append(logits.detach().cpu())
            seen_labels.append(labels.cpu())
            bar.set_postfix(loss=f"{value:.4f}")
        if context.enabled:
            torch.distributed.all_reduce(totals)
        if not all(torch.isfinite(p.detach()).all() for p in self.model.parameters()):
            raise TrainingError(
                f"the model's weights became non-finite in epoch {epoch} (divergence); "
                f"training stopped and the last good checkpoint ({self.run_dir.last_checkpoint}, "
                f"epoch {epoch - 1}) is kept. Try a lower --lr / --quantum-lr."
            )
        # ACC/AUC of the predictions made while training (augmented, dropout on), for the curves.
        task = self.data.info.task
        logits_all = gather_rows(torch.cat(seen_logits), context)
        labels_all = gather_rows(torch.cat(seen_labels), context)
        scores = scores_from_logits(logits_all, task)
        try:
            metrics = medmnist_metrics(labels_all.numpy(), scores, task)
        except ValueError:  # a class absent from this epoch's images: AUC is undefined
            metrics = {"acc": None, "auc": None}
        return {
            "train_loss": float(totals[0] / max(float(totals[1]), 1.0)),
            "train_acc": metrics["acc"],
            "train_auc": metrics["auc"],
        }

    def fit(self) -> dict[str, Any]:
        """Train until the last epoch or early stopping; returns the best validation record.

        Holds the run directory's lock (:meth:`RunDir.lock`) while it trains."""
        with self.run_dir.lock():
            return self._fit()

    def _fit(self) -> dict[str, Any]:
        config, main = self.config, self.context.is_main
        if main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.start_epoch == 1 and main:
            atomic_write_json(
                self.run_dir.config_path,
                _describe_run(config, self.data, self.model, self.context, self.device),
            )
        val = self.data.splits["val"]
        board = TensorBoardLog(self.run_dir, enabled=main)
        for epoch in range(self.start_epoch, config.epochs + 1):
            if epoch - self.best_epoch > config.patience and self.best_epoch > 0:
                break
            started = time.perf_counter()
            record: dict[str, Any] = {"epoch": epoch, "lr": self.scheduler.get_last_lr()[0]}
            record.update(self._train_epoch(epoch))
            record["train_seconds"] = time.perf_counter() - started
            self.scheduler.step()
            score = score_split(
                self.model,
                val.images,
                val.labels,
                self.data.info.task,
                context=self.context,
                device=self.device,
            )
            record.update({f"val_{k}": v for k, v in score.metrics().items()})
            record["seconds"] = time.perf_counter() - started
            improved = score.auc > self.best_auc
            if improved:
                self.best_auc, self.best_epoch = score.auc, epoch
            if improved and main:
                self.run_dir.save_checkpoint(
                    self.run_dir.best_checkpoint,
                    {"epoch": epoch, "model": self.model.state_dict(), "val": score.metrics()},
                )
            self.history.append(record)
            self._save_checkpoint(epoch)
            board.epoch(record)
            if not main or self.log is None:
                continue
            (tqdm.write if self.progress else self.log)(
                f"epoch {epoch:3d}/{config.epochs}  loss {record['train_loss']:.4f}  "
                f"val loss {score.loss:.4f} acc {score.acc:.4f} auc {score.auc:.4f}"
                f"{'  *best*' if improved else ''}  ({record['seconds']:.1f}s)"
            )
        board.close()
        return {"best_epoch": self.best_epoch, "best_val_auc": self.best_auc}
