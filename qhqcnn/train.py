"""Training: AdamW + cosine schedule, best checkpoint by validation AUC, early stopping, resume.

Run directory (``--out``)::

    config.json      the TrainConfig, data provenance, parameter counts, circuit, environment
    history.json     one record per finished epoch (train/val loss, ACC, AUC, lr, seconds)
    last.pt          resumable state after the last finished epoch (model, optimizer, RNG, …)
    best.pt          model weights of the epoch with the best validation AUC
    metrics_test.json, predictions_test.npz   written by evaluation at the end

Every file is written atomically. Ctrl-C keeps ``last.pt``; ``--resume`` re-runs the interrupted
epoch from its start with the saved RNG state, so the result equals an uninterrupted run.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from qhqcnn.backends import make_backend
from qhqcnn.batches import epoch_generator, images_to_tensor, labels_to_tensor, train_batches
from qhqcnn.config import TrainConfig
from qhqcnn.data import DatasetInfo, Relabel, load_split
from qhqcnn.errors import RunNotFoundError, TrainingError
from qhqcnn.io import atomic_torch_save, atomic_write_json, environment_record, read_json
from qhqcnn.metrics import medmnist_metrics, scores_from_logits
from qhqcnn.models import HybridNet, build_model, parameter_counts
from qhqcnn.qnn import QuantumLayer
from qhqcnn.scoring import loss_function, score_split

CONFIG_FILE = "config.json"
HISTORY_FILE = "history.json"
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"


@dataclass
class SplitTensors:
    images: torch.Tensor
    labels: torch.Tensor


@dataclass
class PreparedData:
    info: DatasetInfo
    splits: dict[str, SplitTensors]


def load_data(
    config: TrainConfig, data_dir: str | None, splits: tuple[str, ...] = ("train", "val", "test")
) -> PreparedData:
    """Load the config's dataset (relabelled if asked) as normalised tensors."""
    relabel = Relabel.parse(config.relabel) if config.relabel else None
    tensors, info = {}, None
    for split in splits:
        data = load_split(config.dataset, split, data_dir, relabel=relabel)
        limit = config.max_train if split == "train" else config.max_eval
        images, labels = data.images[:limit], data.labels[:limit]
        info = data.info
        tensors[split] = SplitTensors(images_to_tensor(images), labels_to_tensor(labels, info.task))
    assert info is not None
    return PreparedData(info=info, splits=tensors)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def model_for_config(config: TrainConfig, info: DatasetInfo, backend=None) -> HybridNet:
    """The model a config describes, on ``backend`` (default: the config's own backend)."""
    if backend is None and config.model.is_quantum:
        backend = make_backend(config.backend, **config.backend_options)
    return build_model(config.model, info.n_channels, info.n_classes, backend, seed=config.seed)


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


def _describe_run(config: TrainConfig, data: PreparedData, model: HybridNet) -> dict[str, Any]:
    info = data.info
    record: dict[str, Any] = {
        "config": config.to_dict(),
        "data": {
            "dataset": config.dataset,
            "task": info.task,
            "n_classes": info.n_classes,
            "n_channels": info.n_channels,
            "label_names": info.label_names,
            "file": info.file_name,
            "md5": info.md5,
            "n_images": {k: int(v.images.shape[0]) for k, v in data.splits.items()},
        },
        "parameters": parameter_counts(model),
        "environment": environment_record(),
    }
    head = model.head
    if hasattr(head, "template"):
        record["circuit"] = head.template.summary()
        record["circuit"]["backend"] = {"name": head.backend.name, **head.prepared.info}
    return record


class Trainer:
    """Owns one run directory: builds everything from the config and trains it to the end."""

    def __init__(
        self,
        config: TrainConfig,
        out_dir: str | Path,
        *,
        data_dir: str | None = None,
        progress: bool = True,
    ) -> None:
        self.config = config
        self.out_dir = Path(out_dir)
        self.data_dir = data_dir
        self.progress = progress
        if config.threads:
            torch.set_num_threads(config.threads)
        self.data = load_data(config, data_dir)
        seed_everything(config.seed)
        self.model = model_for_config(config, self.data.info)
        self.loss_fn = loss_function(self.data.info.task)
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
        cls, out_dir: str | Path, *, data_dir: str | None = None, progress: bool = True
    ) -> Trainer:
        """Rebuild a run from its saved config and continue after its last finished epoch."""
        out_dir = Path(out_dir)
        config_path, last_path = out_dir / CONFIG_FILE, out_dir / LAST_CHECKPOINT
        if not config_path.exists():
            raise RunNotFoundError(f"no run to resume at {out_dir} ({CONFIG_FILE} is missing)")
        config = TrainConfig.from_dict(read_json(config_path)["config"])
        trainer = cls(config, out_dir, data_dir=data_dir, progress=progress)
        if last_path.exists():
            trainer._load_checkpoint(last_path)
        return trainer

    def _save_checkpoint(self, epoch: int) -> None:
        atomic_torch_save(
            self.out_dir / LAST_CHECKPOINT,
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
        )
        atomic_write_json(self.out_dir / HISTORY_FILE, self.history)

    def _load_checkpoint(self, path: Path) -> None:
        try:
            state = torch.load(path, weights_only=False)
        except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint is the same error
            raise TrainingError(f"cannot read checkpoint {path}: {exc}") from exc
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.best_auc, self.best_epoch = state["best_auc"], state["best_epoch"]
        self.history = state["history"]
        self.start_epoch = state["epoch"] + 1
        _set_rng_state(state["rng"])

    # -- training ----------------------------------------------------------------------------
    def _train_epoch(self, epoch: int) -> dict[str, float]:
        config, train = self.config, self.data.splits["train"]
        self.model.train()
        generator = epoch_generator(config.seed, epoch)
        batches = train_batches(
            train.images, train.labels, config.batch_size, generator, augment=config.augment
        )
        n_batches = max(1, train.images.shape[0] // config.batch_size)
        total_loss, total_seen = 0.0, 0
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
            logits = self.model(images)
            loss = self.loss_fn(logits, labels)
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"non-finite loss ({loss.item()}) at epoch {epoch}, batch {step}; training "
                    f"stopped and the last good checkpoint ({self.out_dir / LAST_CHECKPOINT}, "
                    f"epoch {epoch - 1}) is kept. Try a lower --lr."
                )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total_loss += loss.item() * images.shape[0]
            total_seen += images.shape[0]
            seen_logits.append(logits.detach())
            seen_labels.append(labels)
            bar.set_postfix(loss=f"{loss.item():.4f}")
        # ACC/AUC of the predictions made while training (augmented, dropout on), for the curves.
        task = self.data.info.task
        scores = scores_from_logits(torch.cat(seen_logits), task)
        try:
            train = medmnist_metrics(torch.cat(seen_labels).numpy(), scores, task)
        except ValueError:  # a class absent from this epoch's images: AUC is undefined
            train = {"acc": None, "auc": None}
        return {
            "train_loss": total_loss / max(total_seen, 1),
            "train_acc": train["acc"],
            "train_auc": train["auc"],
        }

    def fit(self) -> dict[str, Any]:
        """Train until the last epoch or early stopping; returns the best validation record."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        config = self.config
        if self.start_epoch == 1:
            atomic_write_json(
                self.out_dir / CONFIG_FILE, _describe_run(config, self.data, self.model)
            )
        val = self.data.splits["val"]
        for epoch in range(self.start_epoch, config.epochs + 1):
            if epoch - self.best_epoch > config.patience and self.best_epoch > 0:
                break
            started = time.perf_counter()
            record: dict[str, Any] = {"epoch": epoch, "lr": self.scheduler.get_last_lr()[0]}
            record.update(self._train_epoch(epoch))
            self.scheduler.step()
            score = score_split(self.model, val.images, val.labels, self.data.info.task)
            record.update({f"val_{k}": v for k, v in score.metrics().items()})
            record["seconds"] = time.perf_counter() - started
            improved = score.auc > self.best_auc
            if improved:
                self.best_auc, self.best_epoch = score.auc, epoch
                atomic_torch_save(
                    self.out_dir / BEST_CHECKPOINT,
                    {"epoch": epoch, "model": self.model.state_dict(), "val": score.metrics()},
                )
            self.history.append(record)
            self._save_checkpoint(epoch)
            (tqdm.write if self.progress else print)(
                f"epoch {epoch:3d}/{config.epochs}  loss {record['train_loss']:.4f}  "
                f"val loss {score.loss:.4f} acc {score.acc:.4f} auc {score.auc:.4f}"
                f"{'  *best*' if improved else ''}  ({record['seconds']:.1f}s)"
            )
        return {"best_epoch": self.best_epoch, "best_val_auc": self.best_auc}


def run_dir_config(run_dir: str | Path) -> TrainConfig:
    """The TrainConfig saved in ``run_dir`` (clear error if the run does not exist)."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.exists():
        raise RunNotFoundError(f"{run_dir} is not a qhqcnn run directory ({CONFIG_FILE} missing)")
    return TrainConfig.from_dict(read_json(path)["config"])
