"""The QCNN model (Cong et al.) and its classical twin.

qcnn (4 qubits, amplitude encoding by default)::

    image ─ channel mean ─ adaptive avg-pool 4×4 ─ 16 values ─ amplitude-tree angles
          ─ QCNN circuit (conv ─ pool ─ dense) ─ ⟨Z⟩,⟨X⟩ of the 2 kept qubits ─ FC n_classes
    (angle encoding: avg-pool 4×4 per channel ─ FC 16C → n ─ π·tanh ─ QCNN circuit ─ …)

``qcnn-classical`` swaps the circuit for :class:`ClassicalQCNNHead`,
``tanh(Linear(h, n_out)) ∘ tanh(Linear(n_in, h))`` on the circuit's own input angles, with the
width h whose parameter count is nearest the circuit's weights (31 vs 31 with the default
angle encoding; 24 vs 31 with amplitude encoding, whose 15 inputs allow no closer width).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from qhqcnn.backends.base import ExecutionBackend
from qhqcnn.circuits.encodings import amplitude_angles
from qhqcnn.circuits.quanv import qcnn_template
from qhqcnn.circuits.template import CircuitTemplate
from qhqcnn.config import ModelSpec
from qhqcnn.errors import ConfigError
from qhqcnn.models.base import HybridModel, seeded_module
from qhqcnn.models.hqcnn import AngleMap
from qhqcnn.models.registry import register_model
from qhqcnn.nn.quantum_layer import QuantumLayer


def qcnn_spec_template(spec: ModelSpec) -> CircuitTemplate:
    """The QCNN circuit of ``spec`` (also the size of its twin's layer)."""
    return qcnn_template(spec.num_qubits, spec.layers, encoding=spec.encoding)


def matched_width(num_inputs: int, num_outputs: int, target: int) -> int:
    """The hidden width h >= 1 of ``n_in → h → n_out`` (with biases) whose parameter count
    ``h·(n_in + 1) + n_out·(h + 1)`` is nearest ``target`` (the smaller h on a tie)."""
    per_unit = num_inputs + 1 + num_outputs
    return max(1, round((target - num_outputs) / per_unit - 1e-9))


class ClassicalQCNNHead(nn.Module):
    """The classical twin of the QCNN circuit: ``tanh(Linear(h, n_out)) ∘ tanh(Linear(n_in, h))``
    with h from :func:`matched_width` (outputs in [−1, 1] like ⟨Z⟩, ⟨X⟩)."""

    def __init__(self, num_inputs: int, num_outputs: int, target_parameters: int) -> None:
        super().__init__()
        self.num_inputs, self.num_outputs = num_inputs, num_outputs
        self.hidden = matched_width(num_inputs, num_outputs, target_parameters)
        self.net = nn.Sequential(
            nn.Linear(num_inputs, self.hidden),
            nn.Tanh(),
            nn.Linear(self.hidden, num_outputs),
            nn.Tanh(),
        )

    def forward(self, angles: torch.Tensor) -> torch.Tensor:
        return self.net(angles)


class QCNNNet(HybridModel):
    """Classical downsampling → QCNN circuit (or its classical twin) → linear classifier."""

    def __init__(
        self,
        layer: QuantumLayer | ClassicalQCNNHead,
        in_channels: int,
        num_classes: int,
        *,
        encoding: str = "amplitude",
        num_qubits: int | None = None,
    ) -> None:
        super().__init__()
        if num_qubits is None:
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

    def circuit_inputs(self, images: torch.Tensor) -> torch.Tensor:
        """The circuit's input angles for a batch of images in [−1, 1]."""
        if self.encoding == "amplitude":
            pixels = (images.mean(dim=1, keepdim=True) + 1) / 2  # [0, 1], black stays 0
            pooled = F.adaptive_avg_pool2d(pixels, self.side).flatten(1)
            return amplitude_angles(pooled)
        return self.bridge(F.adaptive_avg_pool2d(images, self.side).flatten(1))

    def readout(self) -> nn.Module:
        """The trained layer after the circuit: its outputs → class logits."""
        return self.classifier

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.head(self.circuit_inputs(images)))


@register_model(
    "qcnn",
    quantum=True,
    twin="qcnn-classical",
    template=qcnn_spec_template,
    summary="a QCNN (conv, pool, dense blocks) on a downsampled image",
)
def build_qcnn(
    spec: ModelSpec,
    in_channels: int,
    num_classes: int,
    backend: ExecutionBackend | None,
    *,
    seed: int = 0,
    image_size: int = 28,
) -> QCNNNet:
    """A :class:`QCNNNet` with the circuit of ``spec`` on ``backend``."""
    layer = QuantumLayer(qcnn_spec_template(spec), backend, seed=seed)
    return QCNNNet(layer, in_channels, num_classes, encoding=spec.encoding)


@register_model(
    "qcnn-classical",
    quantum=False,
    template=qcnn_spec_template,
    summary="qcnn's twin: a two-layer tanh MLP with the circuit's parameter count",
)
def build_qcnn_classical(
    spec: ModelSpec,
    in_channels: int,
    num_classes: int,
    backend: ExecutionBackend | None = None,
    *,
    seed: int = 0,
    image_size: int = 28,
) -> QCNNNet:
    """``qcnn`` with its circuit swapped for :class:`ClassicalQCNNHead` (``backend`` ignored)."""
    template = qcnn_spec_template(spec)  # the circuit the twin stands in for
    head = seeded_module(
        seed,
        lambda: ClassicalQCNNHead(template.num_inputs, template.num_outputs, template.num_weights),
    )
    return QCNNNet(
        head, in_channels, num_classes, encoding=spec.encoding, num_qubits=template.num_qubits
    )
