"""``Quanv2d``: a quanvolutional layer that runs one circuit template on every image patch.

::

    images (B, C, H, W) ─ unfold k×k / stride s ─ (B·C·P, k²) patch values
        ─ encoder (π·x │ amplitude-tree angles) ─ QuantumLayer (ONE batched QNN evaluation)
        ─ (B·C·P, n_out) ─ reshape ─ (B, C·n_out, H', W'),   H' = (H − k) // s + 1

Channels are quanvolved separately with the same filter (output channel c·n_out + j is
observable j of input channel c). The circuit goes through the same ``QuantumLayer`` /
``EstimatorQNN`` / ``TorchConnector`` seam as every other model, so every execution backend
(exact engine, Qiskit reference, noisy Aer, hardware) runs it unchanged.

A *fixed* filter (no trainable weights, exact backend) is memoised: features are looked up by
the bytes of each input image, so an image seen before (later epochs, evaluation) costs nothing.
:mod:`qhqcnn.nn.feature_cache` fills this memory from an on-disk cache.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from qhqcnn.backends.base import ExecutionBackend, PreparedCircuit
from qhqcnn.circuits.encodings import get_encoding
from qhqcnn.circuits.template import CircuitTemplate
from qhqcnn.errors import ConfigError
from qhqcnn.nn.quantum_layer import QuantumLayer

#: Default cap of a layer's feature memory (bytes of stored features).
DEFAULT_MEMORY_BYTES = 2 << 30


class FeatureMemory:
    """Features of images already quanvolved, keyed by a digest of the image's bytes.

    Storing stops (lookups go on) once ``max_bytes`` of features are held.
    """

    def __init__(self, max_bytes: int = DEFAULT_MEMORY_BYTES) -> None:
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._rows: dict[bytes, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self._rows)

    @staticmethod
    def key(image: torch.Tensor) -> bytes:
        """A 16-byte digest of one image's dtype, shape and values."""
        array = image.detach().cpu().contiguous().numpy()
        digest = hashlib.blake2b(digest_size=16)
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(array.tobytes())
        return digest.digest()

    def clear(self) -> None:
        self._rows.clear()
        self.nbytes = 0

    def store(self, images: torch.Tensor, features: torch.Tensor) -> None:
        """Remember ``features[i]`` as the result for ``images[i]``."""
        for image, row in zip(images, features.detach().float().cpu(), strict=True):
            key = self.key(image)
            if key in self._rows:
                continue
            size = row.numel() * row.element_size()
            if self.nbytes + size > self.max_bytes:
                return
            self._rows[key] = row.clone()
            self.nbytes += size

    def __call__(
        self, images: torch.Tensor, compute: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        """Features of ``images``: remembered rows, the rest from one ``compute`` call."""
        keys = [self.key(image) for image in images]
        missing = [i for i, key in enumerate(keys) if key not in self._rows]
        if missing:
            computed = compute(images[missing])
            self.store(images[missing], computed)
            fresh = dict(zip(missing, computed.detach(), strict=True))
        else:
            fresh = {}
        rows = [fresh[i] if i in fresh else self._rows[key] for i, key in enumerate(keys)]
        return torch.stack(rows).to(device=images.device, dtype=images.dtype)


def fold_patch_outputs(
    values: torch.Tensor, channels: int, out_height: int, out_width: int
) -> torch.Tensor:
    """``(B·C·P, n_out)`` per-patch circuit outputs → ``(B, C·n_out, H', W')`` feature maps.

    Rows are in :meth:`Quanv2d.patches` order (image, channel, patch row-major); output channel
    c·n_out + j is observable j of input channel c.
    """
    outputs = values.shape[-1]
    per_image = channels * out_height * out_width
    if values.ndim != 2 or values.shape[0] % per_image:
        raise ConfigError(
            f"{tuple(values.shape)} circuit outputs are not whole images of {channels} "
            f"channel(s) × {out_height}×{out_width} patches"
        )
    batch = values.shape[0] // per_image
    values = values.reshape(batch, channels, out_height * out_width, outputs).permute(0, 1, 3, 2)
    return values.reshape(batch, channels * outputs, out_height, out_width)


class Quanv2d(nn.Module):
    """Quanvolution: ``template`` applied to every ``window``×``window`` patch with ``stride``.

    ``encoding`` names the classical map from patch values to the template's inputs
    (:func:`qhqcnn.circuits.encodings.get_encoding`); values are first rescaled from ``pixel_range``
    to [0, 1] (e.g. ``(-1, 1)`` for the package's normalised images).
    """

    def __init__(
        self,
        template: CircuitTemplate,
        backend: ExecutionBackend,
        *,
        window: int = 2,
        stride: int = 2,
        encoding: str = "angle",
        pixel_range: tuple[float, float] = (0.0, 1.0),
        seed: int = 0,
        memoize: bool = True,
    ) -> None:
        super().__init__()
        if window < 1 or stride < 1:
            raise ConfigError(f"window and stride must be >= 1, got {window} and {stride}")
        low, high = pixel_range
        if not high > low:
            raise ConfigError(f"pixel_range must be (low, high) with high > low, got {pixel_range}")
        self.window, self.stride, self.encoding = window, stride, encoding
        self.pixel_range = (float(low), float(high))
        self.encoder = get_encoding(encoding).classical
        inputs = self.encoder(torch.zeros(1, window * window, dtype=torch.float64)).shape[-1]
        if inputs != template.num_inputs:
            raise ConfigError(
                f"a {window}x{window} patch with {encoding} encoding gives {inputs} circuit "
                f"inputs, but template {template.name!r} takes {template.num_inputs}"
            )
        self.quantum = QuantumLayer(template, backend, seed=seed)
        self.memoize = memoize
        self.memory = FeatureMemory()
        self._freeze_if_fixed()

    # -- what the rest of the package reads (run records, parameter counts, backends) ---------
    @property
    def template(self) -> CircuitTemplate:
        return self.quantum.template

    @property
    def backend(self) -> ExecutionBackend:
        return self.quantum.backend

    @property
    def prepared(self) -> PreparedCircuit:
        return self.quantum.prepared

    @property
    def weight(self) -> torch.Tensor:
        """The filter circuit's trainable weights (empty for a fixed filter)."""
        return self.quantum.weight

    @property
    def num_outputs(self) -> int:
        return self.template.num_outputs

    @property
    def is_fixed(self) -> bool:
        """True for filters without trainable weights (e.g. Henderson's random circuits)."""
        return self.template.num_weights == 0

    @property
    def memoizing(self) -> bool:
        """Whether features are remembered: fixed filter, deterministic (exact) backend."""
        return self.memoize and self.is_fixed and self.backend.precision == 0

    def out_channels(self, in_channels: int) -> int:
        return in_channels * self.template.num_outputs

    def out_size(self, size: int) -> int:
        """Output height/width for an input of height/width ``size``."""
        if size < self.window:
            raise ConfigError(f"images of size {size} are smaller than the {self.window} window")
        return (size - self.window) // self.stride + 1

    def set_backend(self, backend: ExecutionBackend) -> None:
        """Re-target the filter to another backend (forgets remembered features)."""
        self.quantum.set_backend(backend)
        self._freeze_if_fixed()
        self.memory.clear()

    def _freeze_if_fixed(self) -> None:
        # A weightless filter needs no backward pass: without this, the connector's empty
        # weight would make autograd compute input gradients of every patch for nothing.
        if self.is_fixed:
            self.quantum.weight.requires_grad_(False)

    # -- computation -------------------------------------------------------------------------
    def patches(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` → ``(B·C·P, k²)`` patch values rescaled to [0, 1] (row-major)."""
        if images.ndim != 4:
            raise ConfigError(f"Quanv2d expects (batch, channels, H, W), got {tuple(images.shape)}")
        batch, channels = images.shape[:2]
        low, high = self.pixel_range
        scaled = (images - low) / (high - low)
        columns = F.unfold(scaled, kernel_size=self.window, stride=self.stride)
        count = columns.shape[-1]
        columns = columns.view(batch, channels, self.window * self.window, count)
        return columns.permute(0, 1, 3, 2).reshape(-1, self.window * self.window)

    def circuit_inputs(self, images: torch.Tensor) -> torch.Tensor:
        """``(B·C·P, n_inputs)``: the circuit's input angles of every patch of every image."""
        return self.encoder(self.patches(images))

    def quanvolve(self, images: torch.Tensor) -> torch.Tensor:
        """Every patch of every image through the circuit in one batched evaluation."""
        _, channels, height, width = images.shape
        values = self.quantum(self.circuit_inputs(images))
        return fold_patch_outputs(values, channels, self.out_size(height), self.out_size(width))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.memoizing and not images.requires_grad:
            return self.memory(images, self.quanvolve)
        return self.quanvolve(images)
