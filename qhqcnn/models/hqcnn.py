"""Hybrid models: a classical conv backbone feeding a quantum (or matched classical) layer.

HQCNN::

    image ─ 5×[conv3×3 BN ReLU] (16-16-pool-64-64-64-pool) ─ FC 256 ─ dropout ─ FC n_q ─ BN
          ─ angle map π·tanh ─ quantum layer (n_q qubits, 2·n_q outputs ⟨Z_i⟩,⟨X_i⟩)
          ─ FC 128 ─ ReLU ─ dropout ─ FC n_classes

The classical ablation is the identical network with the quantum layer replaced by
``tanh(Linear(n_q, n_out))``: the same input and output sizes, outputs bounded in [−1, 1] like
expectation values, and a parameter count within a few of the circuit's (40 vs 38 by default).

The quanvolution family (``quanv``, ``qcnn``) is built by :mod:`qhqcnn.models.quanv`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from qhqcnn.backends.base import ExecutionBackend
from qhqcnn.circuits import hqcnn_template
from qhqcnn.circuits.template import CircuitTemplate
from qhqcnn.errors import ConfigError
from qhqcnn.nn.quantum_layer import QuantumLayer

MODEL_NAMES = (
    "hqcnn",
    "classical",
    "quanv",
    "qcnn",
    "quanv-classical",
    "qcnn-classical",
    "resnet18",
    "backbone-head",
)
#: Each quantum model -> its parameter-matched classical twin (the honest baseline).
CLASSICAL_TWINS = {"hqcnn": "classical", "quanv": "quanv-classical", "qcnn": "qcnn-classical"}
#: Models with a quantum layer (they need an execution backend).
QUANTUM_MODELS = ("hqcnn", "quanv", "qcnn")
#: The quanvolution family and its classical twins, built by :mod:`qhqcnn.models.quanv`.
QUANV_MODELS = ("quanv", "qcnn", "quanv-classical", "qcnn-classical")


#: Read-out choices of the HQCNN circuit (``ModelSpec.observables``).
OBSERVABLES = ("zx", "zx+zz")


@dataclass(frozen=True)
class ModelSpec:
    """Everything that defines a model's architecture (saved in every run config)."""

    model: str = "hqcnn"
    num_qubits: int = 4
    layers: int = 2
    encoding: str = "angle"
    attention: bool = True
    dropout: float = 0.3
    #: BatchNorm1d on the bridge features before the angle map (see ``HybridNet``).
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
        if self.model not in MODEL_NAMES:
            raise ConfigError(
                f"unknown model {self.model!r}; choose one of {', '.join(MODEL_NAMES)}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.observables not in OBSERVABLES:
            raise ConfigError(f"observables must be one of {OBSERVABLES}, got {self.observables!r}")

    @property
    def is_quantum(self) -> bool:
        """Whether this model has a quantum layer (and so needs an execution backend)."""
        return self.model in QUANTUM_MODELS

    def template(self) -> CircuitTemplate:
        """The circuit template of this spec (also defines the classical head's sizes)."""
        if self.model in QUANV_MODELS:
            from qhqcnn.models.quanv import spec_template

            return spec_template(self)
        return hqcnn_template(
            self.num_qubits,
            self.layers,
            encoding=self.encoding,
            attention=self.attention,
            correlators=self.observables == "zx+zz",
        )

    def to_dict(self) -> dict:
        return asdict(self)


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


#: Side of the backbone's last feature map: 28×28 images give 7×7 after two 2×2 max-pools;
#: larger MedMNIST+ images are average-pooled to it, so the FC layer and the bridge to the
#: qubits are the same at every image size.
FEATURE_SIDE = 7


class Backbone(nn.Module):
    """Five 3×3 conv layers (16-16-64-64-64, max-pool after the 2nd and 5th) → FC 256.

    Images larger than 28×28 get an adaptive average pool to 7×7 after the convolutions.
    """

    def __init__(self, in_channels: int, image_size: int = 28, dropout: float = 0.3) -> None:
        super().__init__()
        layers = [
            conv_block(in_channels, 16),
            conv_block(16, 16),
            nn.MaxPool2d(2),
            conv_block(16, 64),
            conv_block(64, 64),
            conv_block(64, 64),
            nn.MaxPool2d(2),
        ]
        if image_size // 4 != FEATURE_SIDE:
            layers.append(nn.AdaptiveAvgPool2d(FEATURE_SIDE))
        self.features = nn.Sequential(*layers)
        side = FEATURE_SIDE
        self.fc = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * side * side, 256),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(images))


class AngleMap(nn.Module):
    """Maps bridge outputs to rotation angles in (−π, π) with π·tanh."""

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        return math.pi * torch.tanh(values)


class ClassicalHead(nn.Module):
    """The classical stand-in for the quantum layer: ``tanh(Linear(n_in, n_out))``."""

    def __init__(self, num_inputs: int, num_outputs: int) -> None:
        super().__init__()
        self.linear = nn.Linear(num_inputs, num_outputs)

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.linear(values))


class HybridNet(nn.Module):
    """Backbone → bridge (FC to the circuit's inputs) → angle map → head → classifier."""

    def __init__(
        self,
        head: nn.Module,
        num_head_inputs: int,
        num_head_outputs: int,
        in_channels: int,
        num_classes: int,
        *,
        image_size: int = 28,
        dropout: float = 0.3,
        bridge_norm: bool = True,
    ) -> None:
        super().__init__()
        self.backbone = Backbone(in_channels, image_size, dropout)
        # BatchNorm on the few bridge features keeps them O(1), so the π·tanh angle map (and the
        # ablation's tanh) does not saturate; without it both models collapse to one class.
        self.bridge = (
            nn.Sequential(nn.Linear(256, num_head_inputs), nn.BatchNorm1d(num_head_inputs))
            if bridge_norm
            else nn.Linear(256, num_head_inputs)
        )
        self.angle_map = AngleMap()
        self.head = head
        self.classifier = nn.Sequential(
            nn.Linear(num_head_outputs, 128),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(128, num_classes),
        )

    def angles(self, images: torch.Tensor) -> torch.Tensor:
        """The classical features sent to the head (the circuit's input angles)."""
        return self.angle_map(self.bridge(self.backbone(images)))

    def readout(self) -> nn.Module:
        """The trained layers after the head: the head's outputs → class logits."""
        return self.classifier

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.head(self.angles(images)))


def build_model(
    spec: ModelSpec,
    in_channels: int,
    num_classes: int,
    backend: ExecutionBackend | None = None,
    *,
    seed: int = 0,
    image_size: int = 28,
) -> nn.Module:
    """Build ``spec.model`` for images with ``in_channels`` channels and ``num_classes`` outputs."""
    from qhqcnn.models.baselines import BASELINE_MODELS, build_baseline

    if spec.model in BASELINE_MODELS:
        return build_baseline(
            spec.model, in_channels, num_classes, image_size=image_size, dropout=spec.dropout
        )
    if spec.model in QUANV_MODELS:
        from qhqcnn.models.quanv import build_quanv_family

        return build_quanv_family(
            spec, in_channels, num_classes, backend, seed=seed, image_size=image_size
        )
    template = spec.template()
    if spec.model == "hqcnn":
        if backend is None:
            raise ConfigError("the hqcnn model needs an execution backend")
        head: nn.Module = QuantumLayer(template, backend, seed=seed)
    else:
        head = ClassicalHead(template.num_inputs, template.num_outputs)
    return HybridNet(
        head,
        template.num_inputs,
        template.num_outputs,
        in_channels,
        num_classes,
        image_size=image_size,
        dropout=spec.dropout,
        bridge_norm=spec.bridge_norm,
    )


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Trainable parameters split into classical, quantum (circuit weights) and the head's share.

    ``head`` is the part that the ablation swaps: the circuit weights for HQCNN, the
    ``Linear(n_q, n_out)`` for the classical model.
    """
    quantum = sum(
        p.numel()
        for m in model.modules()
        if isinstance(m, QuantumLayer)
        for p in m.parameters()
        if p.requires_grad
    )
    total = sum(p.numel() for p in model.parameters() if p.requires_grad)
    head = getattr(model, "head", None)
    head_count = sum(p.numel() for p in head.parameters()) if head is not None else 0
    return {"classical": total - quantum, "quantum": quantum, "head": head_count, "total": total}
