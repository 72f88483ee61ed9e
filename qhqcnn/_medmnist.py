"""Access to medmnist's dataset table and metrics without importing torchvision.

``import medmnist`` runs ``medmnist/__init__.py``, which tries to import the torchvision-based
dataset classes and prints an install hint to stdout when that fails. We only need the pure
``medmnist.info`` (dataset table) and ``medmnist.evaluator`` (numpy/pandas/sklearn metrics)
submodules, so we import those under an empty package module instead of running ``__init__``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types


def _ensure_medmnist_package() -> None:
    """Register a bare ``medmnist`` package (no ``__init__`` executed) unless one is loaded."""
    if "medmnist" in sys.modules:
        return
    spec = importlib.util.find_spec("medmnist")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the 'medmnist' package is required: pip install medmnist==3.0.2")
    package = types.ModuleType("medmnist")
    package.__path__ = list(spec.submodule_search_locations)
    package.__file__ = spec.origin
    package.__package__ = "medmnist"
    sys.modules["medmnist"] = package


_ensure_medmnist_package()
_info = importlib.import_module("medmnist.info")
_evaluator = importlib.import_module("medmnist.evaluator")

_package = sys.modules["medmnist"]
for _attr in ("__version__", "HOMEPAGE", "INFO"):  # what the real __init__ re-exports from info
    if not hasattr(_package, _attr):
        setattr(_package, _attr, getattr(_info, _attr))

INFO: dict[str, dict] = _info.INFO
DEFAULT_ROOT: str | None = _info.DEFAULT_ROOT
MEDMNIST_VERSION: str = _info.__version__
getACC = _evaluator.getACC
getAUC = _evaluator.getAUC

__all__ = ["DEFAULT_ROOT", "INFO", "MEDMNIST_VERSION", "getACC", "getAUC"]
