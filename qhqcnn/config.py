"""Run configuration: every value that decides a training run, saved with its results.

Plain dataclasses (no torch, no qiskit at import): :class:`ModelSpec` is a model's architecture,
:class:`TrainConfig` a whole run. They are the one place that holds each default and each
choice; the command line is generated from them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from qhqcnn.errors import ConfigError

if TYPE_CHECKING:
    from qhqcnn.circuits.template import CircuitTemplate

#: ``flip``: random horizontal and vertical flips (the recipe's default, kept as before);
#: ``anatomy``: the dataset's anatomy-aware policy (:mod:`qhqcnn.training.medical`).
AUGMENTATIONS = ("none", "flip", "anatomy")
#: Class-imbalance handling and training losses (:mod:`qhqcnn.training.medical`).
CLASS_BALANCE = ("none", "weights", "sampler")
LOSSES = ("ce", "ordinal")
#: Read-out choices of the HQCNN circuit (``ModelSpec.observables``).
OBSERVABLES = ("zx", "zx+zz")
#: Where the backbone and the quantum engine run (``auto``: CUDA when torch sees a GPU).
DEVICES = ("auto", "cpu", "cuda")
#: Image sides of MedMNIST v2 (28) and MedMNIST+ (64, 128, 224).
IMAGE_SIZES = (28, 64, 128, 224)
#: Learning rate of the classical parameters (``--lr``) unless the model has its own below.
DEFAULT_LR = 1e-3
#: Models whose default ``lr`` (``--lr``) differs, chosen on BreastMNIST's validation split
#: (docs/recipe.md): the QCNN pair is a ~31-weight model after a fixed downsampling, and at 1e-3
#: the classical twin predicts one class in every seed. Both models of the pair get 3e-2.
MODEL_LR = {"qcnn": 3e-2, "qcnn-classical": 3e-2}


def default_lr(model: str) -> float:
    """The recipe's learning rate of ``model``'s classical parameters."""
    return MODEL_LR.get(model, DEFAULT_LR)


@dataclass(frozen=True)
class ModelSpec:
    """Everything that defines a model's architecture (saved in every run config).

    ``model`` names a registered model (:func:`qhqcnn.models.register_model`); the other fields
    are the options of the shipped families, ignored by models that do not use them.
    """

    model: str = "hqcnn"
    num_qubits: int = 4
    layers: int = 2
    encoding: str = "angle"
    attention: bool = True
    dropout: float = 0.3
    #: BatchNorm1d on the bridge features before the angle map (HQCNN).
    bridge_norm: bool = True
    #: quanv only: ``random`` (fixed, Henderson et al.) or ``trainable`` filter, patch window
    #: and stride, and the seed of the random filter's circuit.
    quanv_filter: str = "random"
    window: int = 2
    stride: int = 2
    filter_seed: int = 0
    #: hqcnn/classical read-out: ``zx`` (⟨Z_i⟩, ⟨X_i⟩; default) or ``zx+zz`` (plus the ring's
    #: ⟨Z_i Z_j⟩ correlators). The bottleneck width is ``num_qubits`` (the bridge's outputs).
    observables: str = "zx"

    def __post_init__(self) -> None:
        from qhqcnn.models.registry import get_model

        get_model(self.model)  # a clear error for an unknown name
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.observables not in OBSERVABLES:
            raise ConfigError(f"observables must be one of {OBSERVABLES}, got {self.observables!r}")

    @property
    def is_quantum(self) -> bool:
        """Whether this model has a quantum layer (and so needs an execution backend)."""
        from qhqcnn.models.registry import get_model

        return get_model(self.model).quantum

    def template(self) -> CircuitTemplate | None:
        """The circuit of this spec (for a classical twin, the circuit it stands in for, which
        sets its layer sizes); ``None`` for a model without one."""
        from qhqcnn.models.registry import get_model

        builder = get_model(self.model).template
        return builder(self) if builder is not None else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainConfig:
    """A training run. ``max_train``/``max_eval`` take the first N images (smoke tests only)."""

    dataset: str = "breastmnist"
    relabel: str | None = None
    model: ModelSpec = field(default_factory=ModelSpec)
    backend: str = "exact"
    backend_options: dict[str, Any] = field(default_factory=dict)
    epochs: int = 40
    batch_size: int = 32
    #: classical parameters' learning rate; ``None`` = the model's default (:func:`default_lr`)
    lr: float | None = None
    #: learning rate of the circuit weights (rotation angles); ``None`` = ``lr``. 3e-2 was chosen
    #: on BreastMNIST's validation split (docs/recipe.md): at 1e-3 the angles barely move.
    quantum_lr: float | None = 3e-2
    weight_decay: float = 1e-4
    augment: str = "flip"
    #: ``none`` (default, as before), ``weights`` (inverse-frequency loss weights; multi-label:
    #: pos_weight) or ``sampler`` (class-balanced sampling with replacement)
    class_balance: str = "none"
    #: ``ce`` (default) or ``ordinal`` (CE + squared EMD of the class CDFs; RetinaMNIST)
    loss: str = "ce"
    patience: int = 15
    seed: int = 0
    threads: int | None = None
    #: ``auto`` (CUDA when torch sees a GPU), ``cpu`` or ``cuda``: backbone and quantum engine.
    device: str = "auto"
    #: torchrun runs: BatchNorm statistics of the global batch (equal to the single-process run)
    #: instead of each rank's share (PyTorch's DDP default, faster). No effect on one process.
    sync_batchnorm: bool = False
    #: image side: 28 (MedMNIST v2) or a MedMNIST+ size (64, 128, 224; memory-mapped).
    size: int = 28
    max_train: int | None = None
    max_eval: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):
            self.model = ModelSpec(**self.model)
        if self.lr is None:
            self.lr = default_lr(self.model.model)
        checks = [
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch size must be >= 1, got {self.batch_size}"),
            (self.lr > 0, f"learning rate must be > 0, got {self.lr}"),
            (self.quantum_lr is None or self.quantum_lr > 0, "quantum learning rate must be > 0"),
            (self.weight_decay >= 0, f"weight decay must be >= 0, got {self.weight_decay}"),
            (self.patience >= 1, f"patience must be >= 1, got {self.patience}"),
            (self.augment in AUGMENTATIONS, f"augment must be one of {AUGMENTATIONS}"),
            (
                self.class_balance in CLASS_BALANCE,
                f"class_balance must be one of {CLASS_BALANCE}",
            ),
            (self.loss in LOSSES, f"loss must be one of {LOSSES}"),
            (self.max_train is None or self.max_train >= 2, "max_train must be >= 2"),
            (self.max_eval is None or self.max_eval >= 2, "max_eval must be >= 2"),
            (self.threads is None or self.threads >= 1, "threads must be >= 1"),
            (self.device in DEVICES, f"device must be one of {DEVICES}, got {self.device!r}"),
            (self.size in IMAGE_SIZES, f"size must be one of {IMAGE_SIZES}, got {self.size}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["model"] = self.model.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config keys: {', '.join(unknown)}")
        return cls(**data)
