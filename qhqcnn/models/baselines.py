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

Both are plain ``nn.Module`` s with a ``head`` attribute of ``None`` (no quantum part and no
swapped head), so run records and parameter counts treat them like any classical model.
"""

from __future__ import annotations

import torch
from torch import nn

from qhqcnn.models.hqcnn import Backbone

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


class ResNet18(nn.Module):
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


class BackboneHead(nn.Module):
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


def build_baseline(
    name: str, in_channels: int, num_classes: int, *, image_size: int = 28, dropout: float = 0.3
) -> nn.Module:
    """The baseline ``name`` (one of :data:`BASELINE_MODELS`)."""
    if name == "resnet18":
        return ResNet18(in_channels, num_classes)
    if name == "backbone-head":
        return BackboneHead(in_channels, num_classes, image_size=image_size, dropout=dropout)
    raise ValueError(f"not a baseline model: {name!r}")
