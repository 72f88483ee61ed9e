"""Run configuration: every value that decides a training run, saved with its results.

Plain dataclasses (no torch, no qiskit at import): :class:`ModelSpec` is a model's architecture,
:class:`TrainConfig` a whole run. They are the one place that holds each default and each
choice; the command line is generated from them.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from qhqcnn.errors import ConfigError

if TYPE_CHECKING:
    from qhqcnn.circuits.template import CircuitTemplate

#: ``flip``: random horizontal and vertical flips (the recipe's default, kept as before);
#: ``anatomy``: the dataset's anatomy-aware policy (:mod:`qhqcnn.data.augment`).
AUGMENTATIONS = ("none", "flip", "anatomy")
#: Class-imbalance handling and training losses (:mod:`qhqcnn.training.medical`).
CLASS_BALANCE = ("none", "weights", "sampler")
LOSSES = ("ce", "ordinal")
#: Read-out choices of the HQCNN circuit (``ModelSpec.observables``).
OBSERVABLES = ("zx", "zx+zz")
#: Data encodings of the shipped circuits (``amplitude``: quanv and qcnn only).
ENCODINGS = ("angle", "superposition", "amplitude")
#: quanv filters: a fixed ``random`` circuit (Henderson et al., cached) or ``trainable`` layers.
QUANV_FILTERS = ("random", "trainable")
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


def _option(default: Any = None, help: str = "", **meta: Any) -> Any:
    """A dataclass field whose ``metadata`` describes its command-line flag (``qhqcnn.cli``).

    ``help`` is the flag's help text (the CLI appends the default); optional ``flag`` (the
    option string when it is not ``--field-name``), ``choices``, ``metavar`` and
    ``show_default=False`` (when ``help`` already says what the default is).
    """
    return field(default=default, metadata={"help": help, **meta})


def default_lr(model: str) -> float:
    """The recipe's learning rate of ``model``'s classical parameters."""
    return MODEL_LR.get(model, DEFAULT_LR)


@dataclass(frozen=True)
class ModelSpec:
    """Everything that defines a model's architecture (saved in every run config).

    ``model`` names a registered model (:func:`qhqcnn.models.register_model`); the other fields
    are the options of the shipped families, ignored by models that do not use them.
    """

    model: str = _option(
        "hqcnn",
        "registered model: hqcnn, classical (its ablation), quanv (quanvolution), qcnn, the "
        "quanvolution family's classical twins quanv-classical, qcnn-classical, and the "
        "baselines backbone-head (no bottleneck) and resnet18 (28×28); see `qhqcnn info`",
    )
    num_qubits: int = _option(4, "qubits of the circuit", flag="--qubits")
    layers: int = _option(2, "entangling layers of the circuit")
    encoding: str = _option(
        "angle", "data encoding (amplitude: quanv and qcnn only)", choices=ENCODINGS
    )
    attention: bool = _option(True, "the Fourier attention block (--no-attention drops it)")
    dropout: float = _option(0.3, "dropout probability before the classifier head, in [0, 1)")
    #: BatchNorm1d on the bridge features before the angle map (HQCNN).
    bridge_norm: bool = _option(
        True, "hqcnn: BatchNorm1d on the bridge features before the angle map"
    )
    #: quanv only: ``random`` (fixed, Henderson et al.) or ``trainable`` filter, patch window
    #: and stride, and the seed of the random filter's circuit.
    quanv_filter: str = _option(
        "random",
        "quanv: fixed random filter (Henderson et al., cached) or trainable n_local layers",
        choices=QUANV_FILTERS,
    )
    window: int = _option(2, "quanv: patch window k (k×k pixels)")
    stride: int = _option(2, "quanv: patch stride")
    filter_seed: int = _option(0, "quanv: the random filter's seed")
    #: hqcnn/classical read-out: ``zx`` (⟨Z_i⟩, ⟨X_i⟩; default) or ``zx+zz`` (plus the ring's
    #: ⟨Z_i Z_j⟩ correlators). The bottleneck width is ``num_qubits`` (the bridge's outputs).
    observables: str = _option(
        "zx",
        "hqcnn read-out: zx (<Z_i>, <X_i>) or zx+zz (plus the ring's <Z_i Z_j> correlators)",
        choices=OBSERVABLES,
    )

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


def _positive(value: Any) -> bool:
    return isinstance(value, numbers.Real) and math.isfinite(value) and value > 0


_INTEGERS = ("epochs", "batch_size", "patience", "seed", "size")
_OPTIONAL_INTEGERS = ("threads", "max_train", "max_eval")
_NUMBERS = ("lr", "weight_decay")
_OPTIONAL_NUMBERS = ("quantum_lr",)
_BOOLS = ("sync_batchnorm", "allow_large_memory")


def _check_types(config: TrainConfig) -> None:
    """A :class:`ConfigError` for a value of the wrong type (e.g. from an edited config.json)."""

    def is_int(value: Any) -> bool:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)

    def is_number(value: Any) -> bool:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)

    expected = [
        *((name, is_int, "an integer") for name in _INTEGERS),
        *((name, lambda v: v is None or is_int(v), "an integer or null") for name in
          _OPTIONAL_INTEGERS),
        *((name, is_number, "a number") for name in _NUMBERS),
        *((name, lambda v: v is None or is_number(v), "a number or null") for name in
          _OPTIONAL_NUMBERS),
        *((name, lambda v: isinstance(v, bool), "true or false") for name in _BOOLS),
        ("backend_options", lambda v: isinstance(v, dict), "a mapping"),
        ("relabel", lambda v: v is None or isinstance(v, str), "a string or null"),
    ]  # fmt: skip
    for name, ok, kind in expected:
        value = getattr(config, name)
        if not ok(value):
            raise ConfigError(f"{name} must be {kind}, got {value!r}")
    for name in ("dataset", "backend", "augment", "device"):
        if not isinstance(getattr(config, name), str):
            raise ConfigError(f"{name} must be a string, got {getattr(config, name)!r}")


@dataclass
class TrainConfig:
    """A training run. ``max_train``/``max_eval`` take the first N images (smoke tests only)."""

    dataset: str = _option("breastmnist", "MedMNIST dataset (see `qhqcnn info`)")
    relabel: str | None = _option(
        None, "binary variant: CLASS (one vs rest) or NEG,POS (class pair)", metavar="CLASSES"
    )
    model: ModelSpec = field(
        default_factory=ModelSpec, metadata={"help": "the model's architecture (ModelSpec)"}
    )
    backend: str = _option(
        "exact",
        "simulator backend of the quantum layer: exact (fast statevector engine), statevector "
        "(Qiskit reference, slow), aer (noisy device simulation, see --noise); see `qhqcnn info`",
    )
    backend_options: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "backend option (repeatable), e.g. device=cuda; see docs/noise.md",
            "flag": "--backend-option",
            "metavar": "KEY=VALUE",
        },
    )
    epochs: int = _option(40, "training epochs (early stopping may end the run sooner)")
    batch_size: int = _option(32, "images per training batch")
    #: classical parameters' learning rate; ``None`` = the model's default (:func:`default_lr`)
    lr: float | None = _option(
        None,
        f"learning rate of the classical parameters (default: {DEFAULT_LR:g}; "
        + ", ".join(f"{m} {v:g}" for m, v in MODEL_LR.items())
        + ", chosen on validation)",
        show_default=False,
    )
    #: learning rate of the circuit weights (rotation angles); ``None`` = ``lr``. 3e-2 was chosen
    #: on BreastMNIST's validation split (docs/recipe.md): at 1e-3 the angles barely move.
    quantum_lr: float | None = _option(
        3e-2, "learning rate of the circuit weights (chosen on validation)"
    )
    weight_decay: float = _option(1e-4, "AdamW weight decay of the classical parameters")
    augment: str = _option(
        "flip",
        "training augmentation: random flips, none, or anatomy (the dataset's plausible flips, "
        "small rotations and translations; docs/recipe.md)",
        choices=AUGMENTATIONS,
    )
    class_balance: str = _option(
        "none",
        "class imbalance: none, weights (inverse-frequency loss weights; multi-label: "
        "pos_weight) or sampler (class-balanced sampling)",
        choices=CLASS_BALANCE,
    )
    loss: str = _option(
        "ce", "training loss: ce, or ordinal (CE + squared EMD; RetinaMNIST)", choices=LOSSES
    )
    patience: int = _option(15, "early-stopping patience (epochs without a better validation AUC)")
    seed: int = _option(0, "random seed (initial weights, data order, augmentation)")
    threads: int | None = _option(
        None, "torch CPU threads (default: torch's choice)", show_default=False
    )
    #: ``auto`` (CUDA when torch sees a GPU), ``cpu`` or ``cuda``: backbone and quantum engine.
    device: str = _option(
        "auto",
        "where the backbone and the quantum engine run (auto: CUDA when torch sees a GPU)",
        choices=DEVICES,
    )
    #: torchrun runs: BatchNorm statistics of the global batch (equal to the single-process run)
    #: instead of each rank's share (PyTorch's DDP default, faster). No effect on one process.
    sync_batchnorm: bool = _option(
        False,
        "torchrun: BatchNorm over the global batch (same updates as one process; slower) "
        "instead of each rank's share",
    )
    #: image side: 28 (MedMNIST v2) or a MedMNIST+ size (64, 128, 224; memory-mapped).
    size: int = _option(
        28,
        "image size: 28 (MedMNIST v2) or MedMNIST+ 64/128/224 (<name>_<size>.npz, memory-mapped)",
        choices=IMAGE_SIZES,
    )
    max_train: int | None = _option(None, "use the first N training images", metavar="N")
    max_eval: int | None = _option(None, "use the first N val/test images", metavar="N")
    allow_large_memory: bool = _option(
        False,
        "skip the memory guard, which refuses a configuration whose quantum engine needs more "
        "memory than is available (also QHQCNN_ALLOW_LARGE_MEMORY=1)",
    )

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):
            self.model = ModelSpec(**self.model)
        if not isinstance(self.model, ModelSpec):
            raise ConfigError(f"model must be a ModelSpec or a dict, got {self.model!r}")
        if self.lr is None:
            self.lr = default_lr(self.model.model)
        _check_types(self)
        checks = [
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch size must be >= 1, got {self.batch_size}"),
            (_positive(self.lr), f"learning rate must be a finite number > 0, got {self.lr}"),
            (
                self.quantum_lr is None or _positive(self.quantum_lr),
                f"quantum learning rate must be a finite number > 0, got {self.quantum_lr}",
            ),
            (self.seed >= 0, f"seed must be >= 0, got {self.seed}"),
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
