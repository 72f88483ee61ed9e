"""medmnist's dataset table (``INFO``) and metrics (``getACC``/``getAUC``), imported on first use.

These come from the real, installed ``medmnist`` package (``medmnist.info`` and
``medmnist.evaluator``), imported normally: qhqcnn never registers or replaces modules in
``sys.modules``, so ``from medmnist import Evaluator`` works the same before and after qhqcnn.
The import is deferred to the first attribute access because ``import medmnist`` also imports
torch (its dataset classes), which would slow down ``import qhqcnn`` and ``qhqcnn --help``.
"""

from __future__ import annotations

import importlib
from typing import Any

#: attribute -> (medmnist submodule, name there)
_ATTRIBUTES = {
    "INFO": ("medmnist.info", "INFO"),
    "DEFAULT_ROOT": ("medmnist.info", "DEFAULT_ROOT"),
    "MEDMNIST_VERSION": ("medmnist.info", "__version__"),
    "getACC": ("medmnist.evaluator", "getACC"),
    "getAUC": ("medmnist.evaluator", "getAUC"),
    "Evaluator": ("medmnist.evaluator", "Evaluator"),
}

__all__ = sorted(_ATTRIBUTES)


def __getattr__(name: str) -> Any:
    if name not in _ATTRIBUTES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module_name, attribute = _ATTRIBUTES[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:  # pragma: no cover - medmnist is a dependency
        raise ImportError("the 'medmnist' package is required: pip install medmnist") from exc
    value = getattr(module, attribute)
    globals()[name] = value  # later look-ups skip this function
    return value
