"""The quanvolution family's models: ``quanv`` (Quanv2d → small CNN) and ``qcnn`` (a QCNN).

quanv (2×2 window, stride 2, 4 qubits, random fixed filter by default)::

    image 28×28×C ─ Quanv2d ─ 14×14×4C ─ conv3×3 16 ─ conv3×3 32 ─ max-pool ─ 7×7×32
          ─ FC 128 ─ ReLU ─ dropout ─ FC n_classes

qcnn (4 qubits, amplitude encoding by default)::

    image ─ channel mean ─ adaptive avg-pool 4×4 ─ 16 values ─ amplitude-tree angles
          ─ QCNN circuit (conv ─ pool ─ dense) ─ ⟨Z⟩,⟨X⟩ of the 2 kept qubits ─ FC n_classes
    (angle encoding: avg-pool 4×4 per channel ─ FC 16C → n ─ π·tanh ─ QCNN circuit ─ …)

Both take the package's normalised images in [−1, 1] (``qhqcnn.data.batches.images_to_tensor``).

Each has a classical twin, the identical network with only the quantum part swapped (as
``classical`` is to ``hqcnn``), so that any difference is the circuit's:

* ``quanv-classical``: Quanv2d → :class:`ClassicalQuanv2d`, ``tanh(Conv2d(1, n_out, k, s))``
  applied to every input channel with the same window k, stride s and n_out output channels per
  channel (outputs in [−1, 1] like ⟨Z⟩). It is *frozen random* (seeded by ``filter_seed``, 0
  trainable parameters, like the fixed random filter) when the quantum filter is ``random``,
  and trainable when it is ``trainable`` (k²·n_out + n_out weights: 20 vs the circuit's 24 for
  the default 2×2 angle-encoded filter with 2 layers).
* ``qcnn-classical``: the QCNN circuit → :class:`ClassicalQCNNHead`,
  ``tanh(Linear(h, n_out)) ∘ tanh(Linear(n_in, h))`` on the circuit's own input angles, with the
  width h whose parameter count is nearest the circuit's weights (31 vs 31 with the default
  angle encoding; 24 vs 31 with amplitude encoding, whose 15 inputs allow no closer width).

Shared layers are initialised identically in a quantum model and its twin for the same seed
(the twin's own layer is drawn from a separate generator).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch
from torch import nn
from torch.nn import functional as F

from qhqcnn.backends.base import ExecutionBackend
from qhqcnn.circuits.quanv import amplitude_angles, qcnn_template, quanv_template
from qhqcnn.circuits.template import CircuitTemplate
from qhqcnn.errors import ConfigError
from qhqcnn.models.hqcnn import CLASSICAL_TWINS, AngleMap, ModelSpec, conv_block
from qhqcnn.nn.quantum_layer import QuantumLayer
from qhqcnn.nn.quanv2d import Quanv2d, fold_patch_outputs

#: The normalised pixel range of the package's image tensors.
PIXEL_RANGE = (-1.0, 1.0)
#: quantum model -> its classical twin (the same network with the quantum part swapped).
#: classical twin of the quanvolution family -> the quantum model it stands in for.
QUANTUM_OF_TWIN = {
    twin: quantum for quantum, twin in CLASSICAL_TWINS.items() if quantum in ("quanv", "qcnn")
}


def spec_template(spec: ModelSpec) -> CircuitTemplate:
    """The circuit template of a ``quanv`` or ``qcnn`` spec.

    For a classical twin, the circuit it stands in for (as ``ModelSpec(model="classical")``
    gives the HQCNN template): its sizes define the twin's layer.
    """
    if spec.model in QUANTUM_OF_TWIN:
        return spec_template(replace(spec, model=QUANTUM_OF_TWIN[spec.model]))
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


def _seeded(seed: int, factory: Callable[[], nn.Module]) -> nn.Module:
    """``factory()`` with torch's global generator seeded by ``seed`` and then restored, so that
    the layers built after it are initialised as they would be without it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory()


class ClassicalQuanv2d(nn.Module):
    """The classical twin of :class:`~qhqcnn.nn.quanv2d.Quanv2d`: ``tanh(Conv2d(1, n_out, k, s))``.

    Every input channel is convolved separately with the same filter (output channel
    c·n_out + j is filter j on input channel c), as Quanv2d does; tanh bounds the outputs to
    [−1, 1] like expectation values. ``trainable=False`` freezes the random initial filter.
    """

    def __init__(
        self, window: int, stride: int, num_outputs: int, *, trainable: bool, seed: int = 0
    ) -> None:
        super().__init__()
        if window < 1 or stride < 1:
            raise ConfigError(f"window and stride must be >= 1, got {window} and {stride}")
        self.window, self.stride, self.num_outputs = window, stride, num_outputs
        self.conv = _seeded(seed, lambda: nn.Conv2d(1, num_outputs, window, stride=stride))
        self.conv.requires_grad_(trainable)

    @property
    def is_fixed(self) -> bool:
        return not self.conv.weight.requires_grad

    def out_channels(self, in_channels: int) -> int:
        return in_channels * self.num_outputs

    def out_size(self, size: int) -> int:
        """Output height/width for an input of height/width ``size``."""
        if size < self.window:
            raise ConfigError(f"images of size {size} are smaller than the {self.window} window")
        return (size - self.window) // self.stride + 1

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = images.shape
        out = torch.tanh(self.conv(images.reshape(batch * channels, 1, height, width)))
        return out.reshape(batch, channels * self.num_outputs, *out.shape[-2:])


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


class QuanvNet(nn.Module):
    """Quanv2d (or its classical twin) on the image, then a small classical CNN and classifier."""

    def __init__(
        self,
        quanv: Quanv2d | ClassicalQuanv2d,
        in_channels: int,
        num_classes: int,
        *,
        image_size: int = 28,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        self.head = quanv  # the quantum part (run records and parameter counts read ``head``)
        self.in_channels, self.image_size = in_channels, image_size
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

    def angles(self, images: torch.Tensor) -> torch.Tensor:
        """``(B·C·P, n_inputs)``: the filter circuit's input angles of every image patch."""
        if not isinstance(self.head, Quanv2d):
            raise ConfigError("the classical twin has no circuit inputs")
        return self.head.circuit_inputs(images)

    def readout(self) -> nn.Module:
        """The trained layers after the filter: per-patch outputs → feature maps → logits."""
        return PatchReadout(self)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(self.head(images)))


class PatchReadout(nn.Module):
    """``QuanvNet`` after its filter: ``(B·C·P, n_out)`` per-patch outputs (as a hardware job
    returns them) → ``(B, C·n_out, H', W')`` feature maps → CNN → class logits.

    It shares (does not copy) the network's ``features`` and ``classifier``, so its state dict
    is theirs.
    """

    def __init__(self, net: QuanvNet) -> None:
        super().__init__()
        self.features, self.classifier = net.features, net.classifier
        self.channels = net.in_channels
        self.side = net.head.out_size(net.image_size)

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        maps = fold_patch_outputs(values, self.channels, self.side, self.side)
        return self.classifier(self.features(maps))


class QCNNNet(nn.Module):
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

    def angles(self, images: torch.Tensor) -> torch.Tensor:
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
    """Build a ``quanv`` or ``qcnn`` model for ``spec`` on ``backend`` (or a classical twin,
    which needs no backend)."""
    if spec.model in QUANTUM_OF_TWIN:
        return build_classical_twin(
            spec, in_channels, num_classes, seed=seed, image_size=image_size
        )
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


def build_classical_twin(
    spec: ModelSpec,
    in_channels: int,
    num_classes: int,
    *,
    seed: int = 0,
    image_size: int = 28,
) -> nn.Module:
    """Build ``quanv-classical`` or ``qcnn-classical``: the quantum model's network with its
    circuit swapped for a classical layer of the same input and output sizes."""
    template = spec_template(spec)  # the circuit the twin stands in for
    if spec.model == "quanv-classical":
        trainable = spec.quanv_filter != "random"
        head = ClassicalQuanv2d(
            spec.window,
            spec.stride,
            template.num_outputs,
            trainable=trainable,
            # a fixed random filter depends on filter_seed only (the same in every run)
            seed=seed if trainable else spec.filter_seed,
        )
        return QuanvNet(head, in_channels, num_classes, image_size=image_size, dropout=spec.dropout)
    if spec.model == "qcnn-classical":
        head = _seeded(
            seed,
            lambda: ClassicalQCNNHead(
                template.num_inputs, template.num_outputs, template.num_weights
            ),
        )
        return QCNNNet(
            head,
            in_channels,
            num_classes,
            encoding=spec.encoding,
            num_qubits=template.num_qubits,
        )
    raise ConfigError(f"{spec.model!r} is not a classical twin of the quanvolution family")
