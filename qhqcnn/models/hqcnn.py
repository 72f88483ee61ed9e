"""Hybrid models: a classical conv backbone feeding a quantum (or matched classical) layer.

HQCNN::

    image ─ 5×[conv3×3 BN ReLU] (16-16-pool-64-64-64-pool) ─ FC 256 ─ dropout ─ FC n_q ─ BN
          ─ angle map π·tanh ─ quantum layer (n_q qubits, 2·n_q outputs ⟨Z_i⟩,⟨X_i⟩)
          ─ FC 128 ─ ReLU ─ dropout ─ FC n_classes

The classical ablation is the identical network with the quantum layer replaced by
``tanh(Linear(n_q, n_out))``: the same input and output sizes, outputs bounded in [−1, 1] like
expectation values, and a parameter count within a few of the circuit's (40 vs 38 by default).

The quanvolution family is in :mod:`qhqcnn.models.quanv` and :mod:`qhqcnn.models.qcnn`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from qhqcnn.backends.base import ExecutionBackend
from qhqcnn.circuits import hqcnn_template
from qhqcnn.circuits.template import CircuitTemplate
from qhqcnn.config import ModelSpec
from qhqcnn.models.base import HybridModel
from qhqcnn.models.registry import register_model
from qhqcnn.nn.quantum_layer import QuantumLayer


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


class HybridNet(HybridModel):
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

    def circuit_inputs(self, images: torch.Tensor) -> torch.Tensor:
        """The classical features sent to the head (the circuit's input angles), one row per
        image."""
        return self.angle_map(self.bridge(self.backbone(images)))

    def readout(self) -> nn.Module:
        """The trained layers after the head: the head's outputs → class logits."""
        return self.classifier

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.head(self.circuit_inputs(images)))


def hqcnn_spec_template(spec: ModelSpec) -> CircuitTemplate:
    """The HQCNN circuit of ``spec`` (also the size of the classical ablation's layer)."""
    return hqcnn_template(
        spec.num_qubits,
        spec.layers,
        encoding=spec.encoding,
        attention=spec.attention,
        correlators=spec.observables == "zx+zz",
    )


def _hybrid_net(
    spec: ModelSpec,
    head: nn.Module,
    template: CircuitTemplate,
    in_channels: int,
    num_classes: int,
    image_size: int,
) -> HybridNet:
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


@register_model(
    "hqcnn",
    quantum=True,
    twin="classical",
    template=hqcnn_spec_template,
    summary="conv backbone → bridge → angle-encoded circuit with Fourier attention → classifier",
)
def build_hqcnn(
    spec: ModelSpec,
    in_channels: int,
    num_classes: int,
    backend: ExecutionBackend | None,
    *,
    seed: int = 0,
    image_size: int = 28,
) -> HybridNet:
    """The HQCNN: :class:`HybridNet` with the circuit of ``spec`` as its head."""
    template = hqcnn_spec_template(spec)
    head = QuantumLayer(template, backend, seed=seed)
    return _hybrid_net(spec, head, template, in_channels, num_classes, image_size)


@register_model(
    "classical",
    quantum=False,
    template=hqcnn_spec_template,
    summary="the HQCNN with its circuit replaced by tanh(Linear) of the same sizes",
)
def build_classical(
    spec: ModelSpec,
    in_channels: int,
    num_classes: int,
    backend: ExecutionBackend | None = None,
    *,
    seed: int = 0,
    image_size: int = 28,
) -> HybridNet:
    """The HQCNN's parameter-matched classical ablation (``backend`` is ignored)."""
    template = hqcnn_spec_template(spec)
    head = ClassicalHead(template.num_inputs, template.num_outputs)
    return _hybrid_net(spec, head, template, in_channels, num_classes, image_size)
