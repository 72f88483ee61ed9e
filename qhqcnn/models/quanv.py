"""Quanvolution (Henderson et al.): ``quanv`` (Quanv2d → small CNN) and its classical twin.

quanv (2×2 window, stride 2, 4 qubits, random fixed filter by default)::

    image 28×28×C ─ Quanv2d ─ 14×14×4C ─ conv3×3 16 ─ conv3×3 32 ─ max-pool ─ 7×7×32
          ─ FC 128 ─ ReLU ─ dropout ─ FC n_classes

It takes the package's normalised images in [−1, 1] (``qhqcnn.data.batches.images_to_tensor``).

``quanv-classical`` is the identical network with only the quantum part swapped (as
``classical`` is to ``hqcnn``), so that any difference is the circuit's: Quanv2d →
:class:`ClassicalQuanv2d`, ``tanh(Conv2d(1, n_out, k, s))`` applied to every input channel with
the same window k, stride s and n_out output channels per channel (outputs in [−1, 1] like ⟨Z⟩).
It is *frozen random* (seeded by ``filter_seed``, 0 trainable parameters, like the fixed random
filter) when the quantum filter is ``random``, and trainable when it is ``trainable``
(k²·n_out + n_out weights: 20 vs the circuit's 24 for the default 2×2 angle-encoded filter with
2 layers). Shared layers are initialised identically in a quantum model and its twin for the
same seed (the twin's own layer is drawn from a separate generator).
"""

from __future__ import annotations

import torch
from torch import nn

from qhqcnn.backends.base import ExecutionBackend
from qhqcnn.circuits.quanv import quanv_template
from qhqcnn.circuits.template import CircuitTemplate
from qhqcnn.config import ModelSpec
from qhqcnn.errors import ConfigError
from qhqcnn.models.base import HybridModel, seeded_module
from qhqcnn.models.hqcnn import conv_block
from qhqcnn.models.registry import register_model
from qhqcnn.nn.quanv2d import Quanv2d, fold_patch_outputs

#: The normalised pixel range of the package's image tensors.
PIXEL_RANGE = (-1.0, 1.0)


def quanv_spec_template(spec: ModelSpec) -> CircuitTemplate:
    """The quanvolution filter circuit of ``spec`` (also the size of its twin's filter)."""
    return quanv_template(
        spec.window,
        encoding=spec.encoding,
        filter_kind=spec.quanv_filter,
        layers=spec.layers,
        seed=spec.filter_seed,
    )


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
        self.conv = seeded_module(seed, lambda: nn.Conv2d(1, num_outputs, window, stride=stride))
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


class QuanvNet(HybridModel):
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

    def circuit_inputs(self, images: torch.Tensor) -> torch.Tensor:
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


@register_model(
    "quanv",
    quantum=True,
    twin="quanv-classical",
    template=quanv_spec_template,
    summary="quanvolution: a small circuit on every image patch (Henderson et al.) → CNN",
)
def build_quanv(
    spec: ModelSpec,
    in_channels: int,
    num_classes: int,
    backend: ExecutionBackend | None,
    *,
    seed: int = 0,
    image_size: int = 28,
) -> QuanvNet:
    """A :class:`QuanvNet` with the quantum filter of ``spec`` on ``backend``."""
    quanv = Quanv2d(
        quanv_spec_template(spec),
        backend,
        window=spec.window,
        stride=spec.stride,
        encoding=spec.encoding,
        pixel_range=PIXEL_RANGE,
        seed=seed,
    )
    return QuanvNet(quanv, in_channels, num_classes, image_size=image_size, dropout=spec.dropout)


@register_model(
    "quanv-classical",
    quantum=False,
    template=quanv_spec_template,
    summary="quanv's twin: tanh(Conv2d) of the filter's geometry (frozen random when it is)",
)
def build_quanv_classical(
    spec: ModelSpec,
    in_channels: int,
    num_classes: int,
    backend: ExecutionBackend | None = None,
    *,
    seed: int = 0,
    image_size: int = 28,
) -> QuanvNet:
    """``quanv`` with its circuit swapped for :class:`ClassicalQuanv2d` (``backend`` ignored)."""
    template = quanv_spec_template(spec)  # the circuit the twin stands in for
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
