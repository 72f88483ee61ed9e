"""Classical baselines trained with the same code and recipe as the hybrid models.

``resnet18``
    ResNet-18 as in the MedMNIST v2 paper's "ResNet-18 (28)": He et al.'s network with the stem
    changed for 28×28 inputs (one 3×3 stride-1 convolution, no max-pool), then the four stages of
    two BasicBlocks (64-128-256-512 channels, stride 1-2-2-2), global average pool and one
    linear classifier. Written in torch (torchvision is never imported). About 11.2 M
    parameters.

``backbone-head``
    The HQCNN's own 5-conv backbone and FC 256, followed by an ordinary classifier
    (``FC 128 → ReLU → dropout → FC n_classes``) with **no** 4-value bottleneck: what the
    bridge to the qubits costs (or gains) when compared with ``classical`` and ``hqcnn``.

Both are registered models (:func:`~qhqcnn.models.register_model`, classical, no circuit and
no twin) and :class:`~qhqcnn.models.HybridModel` s with a ``head`` of ``None`` (no quantum part
and no swapped head), so run records and parameter counts treat them like any classical model;
they have no circuit inputs, so the hardware path does not apply to them.
"""

from __future__ import annotations

import torch
from torch import nn

from qhqcnn.config import ModelSpec
from qhqcnn.models.base import HybridModel
from qhqcnn.models.hqcnn import Backbone
from qhqcnn.models.registry import register_model

#: The classical baselines of this module (no circuit, no classical twin).
BASELINE_MODELS = ("resnet18", "backbone-head")


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with BatchNorm and an identity (or 1×1 projection) shortcut."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18(HybridModel):
    """ResNet-18 for small images: 3×3 stride-1 stem, no max-pool (MedMNIST's ResNet-18 (28))."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
        )
        stages, in_planes = [], 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages.append(
                nn.Sequential(BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes))
            )
            in_planes = planes
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)
        self.head = None  # no quantum part, no swapped head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.stages(self.stem(images))), 1))


class BackboneHead(HybridModel):
    """The HQCNN backbone (5 convs → FC 256) with an ordinary classifier and no bottleneck."""

    def __init__(
        self, in_channels: int, num_classes: int, *, image_size: int = 28, dropout: float = 0.3
    ) -> None:
        super().__init__()
        self.backbone = Backbone(in_channels, image_size, dropout)
        self.classifier = nn.Sequential(
            nn.Linear(256, 128),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(128, num_classes),
        )
        self.head = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.backbone(images))


@register_model(
    "resnet18",
    quantum=False,
    summary="ResNet-18 (28×28 variant: 3×3 stem, no max-pool), the MedMNIST reference CNN",
)
def build_resnet18(
    spec: ModelSpec, in_channels: int, num_classes: int, backend=None, *, seed: int = 0,
    image_size: int = 28,
) -> ResNet18:  # fmt: skip
    """ResNet-18 (28); ``spec``'s circuit options do not apply."""
    return ResNet18(in_channels, num_classes)


@register_model(
    "backbone-head",
    quantum=False,
    summary="the HQCNN backbone + FC 256 with an ordinary classifier (no 4-value bottleneck)",
)
def build_backbone_head(
    spec: ModelSpec, in_channels: int, num_classes: int, backend=None, *, seed: int = 0,
    image_size: int = 28,
) -> BackboneHead:  # fmt: skip
    """The backbone-only baseline (``spec.dropout`` as in the hybrid models)."""
    return BackboneHead(in_channels, num_classes, image_size=image_size, dropout=spec.dropout)
