"""Model families by name: what each one is and how it is built.

A model family is one file in :mod:`qhqcnn.models` (or a user's own module) that decorates its
builder with :func:`register_model`::

    @register_model("mynet", quantum=True, twin="mynet-classical", template=my_template)
    def build_mynet(spec, in_channels, num_classes, backend, *, seed=0, image_size=28):
        return MyNet(...)            # a qhqcnn.models.HybridModel

After that, ``TrainConfig(model=ModelSpec(model="mynet"))``, ``qhqcnn train --model mynet`` and
the hardware path all know it: nothing else is edited. The shipped families are imported on
the first look-up, so importing this module (and ``qhqcnn.config``) stays free of torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from qhqcnn.errors import ConfigError

if TYPE_CHECKING:
    from qhqcnn.circuits.template import CircuitTemplate
    from qhqcnn.config import ModelSpec

#: The modules of the shipped model families (each registers its models when imported).
BUILTIN_MODEL_MODULES = (
    "qhqcnn.models.hqcnn",
    "qhqcnn.models.quanv",
    "qhqcnn.models.qcnn",
    "qhqcnn.models.baselines",
)


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its builder and what the rest of the package needs to know of it.

    Attributes:
        name: the name used in configs and on the command line.
        builder: ``builder(spec, in_channels, num_classes, backend, *, seed, image_size)``
            returning a :class:`~qhqcnn.models.base.HybridModel`.
        quantum: whether the model has a quantum layer (and so needs an execution backend).
        twin: for a quantum model, the name of its parameter-matched classical twin.
        template: ``template(spec)`` → the circuit of the model (for a classical twin, the
            circuit it stands in for, which sets its layer sizes); ``None`` when there is none.
        summary: one line for ``qhqcnn info`` and the docs.
    """

    name: str
    builder: Callable[..., Any]
    quantum: bool
    twin: str | None = None
    template: Callable[[ModelSpec], CircuitTemplate] | None = None
    summary: str = ""


_ENTRIES: dict[str, ModelEntry] = {}
_builtins_loaded = False


def register_model(
    name: str,
    *,
    quantum: bool,
    twin: str | None = None,
    template: Callable[[ModelSpec], CircuitTemplate] | None = None,
    summary: str = "",
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register ``builder`` as the model ``name`` (see the module docstring).

    Registering a name again replaces the earlier entry (so a notebook cell can be re-run).
    """

    def decorate(builder: Callable[..., Any]) -> Callable[..., Any]:
        _ENTRIES[name] = ModelEntry(name, builder, quantum, twin, template, summary)
        return builder

    return decorate


def _load_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        for module in BUILTIN_MODEL_MODULES:
            importlib.import_module(module)


def get_model(name: str) -> ModelEntry:
    """The entry registered as ``name`` (a :class:`~qhqcnn.errors.ConfigError` if none is)."""
    if name not in _ENTRIES:
        _load_builtins()
    if name not in _ENTRIES:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(model_names())}")
    return _ENTRIES[name]


def model_names() -> list[str]:
    """Every registered model name, in registration order."""
    _load_builtins()
    return list(_ENTRIES)


def quantum_models() -> list[str]:
    """The registered models that have a quantum layer."""
    return [name for name in model_names() if _ENTRIES[name].quantum]


def classical_twins() -> dict[str, str]:
    """Each quantum model with a registered twin → that twin's name."""
    return {
        name: entry.twin
        for name in model_names()
        if (entry := _ENTRIES[name]).twin is not None and entry.twin in _ENTRIES
    }
