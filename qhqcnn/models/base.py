"""The base class of every model, and the one function that builds a model from its spec."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import torch
from torch import nn

from qhqcnn.errors import ConfigError
from qhqcnn.models.registry import get_model
from qhqcnn.nn.quantum_layer import QuantumLayer

if TYPE_CHECKING:
    from qhqcnn.backends.base import ExecutionBackend
    from qhqcnn.config import ModelSpec


ModuleT = TypeVar("ModuleT", bound=nn.Module)


def seeded_module(seed: int, factory: Callable[[], ModuleT]) -> ModuleT:
    """``factory()`` with torch's global generator seeded by ``seed`` and then restored, so that
    the layers built after it are initialised as they would be without it (a twin's own layer
    does not shift the initialisation of the layers it shares with its quantum model)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory()


class HybridModel(nn.Module):
    """A classifier ``images (B, C, H, W) → logits (B, n_classes)`` around one circuit.

    Subclasses build their layers in ``__init__`` and implement :meth:`forward`,
    :meth:`circuit_inputs` (what the layers before the head compute) and :meth:`readout` (the
    trained layers after it). ``self.head`` is the swappable part: a quantum layer, or the
    classical stand-in of the model's twin. That split is
    what the hardware path uses: the circuit inputs are computed here, only the circuit runs on
    the device, and the returned values go through :meth:`readout`. Any registered model that
    follows it can be validated on hardware without special cases.
    """

    #: the quantum layer (:class:`~qhqcnn.nn.QuantumLayer` or a module holding one) or the
    #: classical layer that stands in for it
    head: nn.Module

    def circuit_inputs(self, images: torch.Tensor) -> torch.Tensor:
        """The circuit's input values for a batch of images: ``(B · rows_per_image, n_inputs)``.

        One row is one parameter set of the circuit (one per image for HQCNN and QCNN, one per
        image patch and channel for quanvolution).
        """
        raise NotImplementedError

    def readout(self) -> nn.Module:
        """The trained layers after the head: the head's outputs → class logits."""
        raise NotImplementedError

    @property
    def quantum_layer(self) -> QuantumLayer | None:
        """The model's quantum layer, or ``None`` for a classical model."""
        for module in self.modules():
            if isinstance(module, QuantumLayer):
                return module
        return None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def build_model(
    spec: ModelSpec,
    in_channels: int,
    num_classes: int,
    backend: ExecutionBackend | None = None,
    *,
    seed: int = 0,
    image_size: int = 28,
) -> HybridModel:
    """Build the registered model ``spec.model`` for images with ``in_channels`` channels.

    Args:
        spec: the architecture (:class:`~qhqcnn.config.ModelSpec`).
        in_channels: image channels (1 grey, 3 RGB).
        num_classes: outputs (classes, or labels of a multi-label task).
        backend: execution backend of the quantum layer (quantum models only).
        seed: initialisation seed of the circuit weights (torch's global generator seeds the
            classical layers).
        image_size: image side (28, 64, 128 or 224).
    """
    entry = get_model(spec.model)
    if entry.quantum and backend is None:
        raise ConfigError(f"the {spec.model} model needs an execution backend")
    return entry.builder(spec, in_channels, num_classes, backend, seed=seed, image_size=image_size)


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Trainable parameters split into classical, quantum (circuit weights) and the head's share.

    ``head`` is the part that a classical twin swaps: the circuit weights for a quantum model,
    its stand-in layer for the twin.
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
