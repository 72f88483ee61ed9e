"""The quanvolution family's models: ``quanv`` (Quanv2d → small CNN) and ``qcnn`` (a QCNN).

quanv (2×2 window, stride 2, 4 qubits, random fixed filter by default)::

    image 28×28×C ─ Quanv2d ─ 14×14×4C ─ conv3×3 16 ─ conv3×3 32 ─ max-pool ─ 7×7×32
          ─ FC 128 ─ ReLU ─ dropout ─ FC n_classes

qcnn (4 qubits, amplitude encoding by default)::

    image ─ channel mean ─ adaptive avg-pool 4×4 ─ 16 values ─ amplitude-tree angles
          ─ QCNN circuit (conv ─ pool ─ dense) ─ ⟨Z⟩,⟨X⟩ of the 2 kept qubits ─ FC n_classes
    (angle encoding: avg-pool 4×4 per channel ─ FC 16C → n ─ π·tanh ─ QCNN circuit ─ …)

Both take the package's normalised images in [−1, 1] (``qhqcnn.batches.images_to_tensor``).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from qhqcnn.backends import ExecutionBackend
from qhqcnn.circuits.quanv import amplitude_angles, qcnn_template, quanv_template
from qhqcnn.circuits.template import CircuitTemplate
from qhqcnn.errors import ConfigError
from qhqcnn.models import AngleMap, ModelSpec, conv_block
from qhqcnn.qnn import QuantumLayer
from qhqcnn.quanv import Quanv2d

#: The normalised pixel range of the package's image tensors.
PIXEL_RANGE = (-1.0, 1.0)


def spec_template(spec: ModelSpec) -> CircuitTemplate:
    """The circuit template of a ``quanv`` or ``qcnn`` spec."""
    if spec.model == "quanv":
        return quanv_template(
            spec.window,
            encoding=spec.encoding,
            filter_kind=spec.quanv_filter,
            layers=spec.layers,
            seed=spec.filter_seed,
        )
    if spec.model == "qcnn":
        return qcnn_template(spec.num_qubits, spec.layers, encoding=spec.encoding)
    raise ConfigError(f"{spec.model!r} is not a quanvolution-family model")


class QuanvNet(nn.Module):
    """Quanv2d on the image, then a small classical CNN and classifier."""

    def __init__(
        self,
        quanv: Quanv2d,
        in_channels: int,
        num_classes: int,
        *,
        image_size: int = 28,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        self.head = quanv  # the quantum part (run records and parameter counts read ``head``)
        side = quanv.out_size(image_size) // 2
        if side < 1:
            raise ConfigError(f"the quanv output of {image_size}px images is too small to pool")
        self.features = nn.Sequential(
            conv_block(quanv.out_channels(in_channels), 16),
            conv_block(16, 32),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(32 * side * side, 128),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(128, num_classes),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(self.head(images)))


class QCNNNet(nn.Module):
    """Classical downsampling → QCNN circuit → linear classifier."""

    def __init__(
        self,
        layer: QuantumLayer,
        in_channels: int,
        num_classes: int,
        *,
        encoding: str = "amplitude",
    ) -> None:
        super().__init__()
        num_qubits = layer.template.num_qubits
        self.encoding = encoding
        if encoding == "amplitude":
            side = round((1 << num_qubits) ** 0.5)
            if side * side != 1 << num_qubits:
                raise ConfigError("amplitude encoding of an image needs an even qubit count")
            self.side = side
            self.bridge: nn.Module = nn.Identity()
        else:
            self.side = 4
            self.bridge = nn.Sequential(nn.Linear(in_channels * 16, num_qubits), AngleMap())
        self.head = layer
        self.classifier = nn.Linear(layer.num_outputs, num_classes)

    def angles(self, images: torch.Tensor) -> torch.Tensor:
        """The circuit's input angles for a batch of images in [−1, 1]."""
        if self.encoding == "amplitude":
            pixels = (images.mean(dim=1, keepdim=True) + 1) / 2  # [0, 1], black stays 0
            pooled = F.adaptive_avg_pool2d(pixels, self.side).flatten(1)
            return amplitude_angles(pooled)
        return self.bridge(F.adaptive_avg_pool2d(images, self.side).flatten(1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.head(self.angles(images)))


def build_quanv_family(
    spec: ModelSpec,
    in_channels: int,
    num_classes: int,
    backend: ExecutionBackend | None,
    *,
    seed: int = 0,
    image_size: int = 28,
) -> nn.Module:
    """Build a ``quanv`` or ``qcnn`` model for ``spec`` on ``backend``."""
    if backend is None:
        raise ConfigError(f"the {spec.model} model needs an execution backend")
    template = spec_template(spec)
    if spec.model == "quanv":
        quanv = Quanv2d(
            template,
            backend,
            window=spec.window,
            stride=spec.stride,
            encoding=spec.encoding,
            pixel_range=PIXEL_RANGE,
            seed=seed,
        )
        return QuanvNet(
            quanv, in_channels, num_classes, image_size=image_size, dropout=spec.dropout
        )
    layer = QuantumLayer(template, backend, seed=seed)
    return QCNNNet(layer, in_channels, num_classes, encoding=spec.encoding)
