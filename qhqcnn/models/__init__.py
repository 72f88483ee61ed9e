"""Models: a registry of model families, each a :class:`HybridModel` around one circuit.

Shipped families: ``hqcnn`` and its ablation ``classical``; ``quanv`` and ``quanv-classical``;
``qcnn`` and ``qcnn-classical``. A new family is one module that decorates its builder with
:func:`register_model`.
"""

from __future__ import annotations

from qhqcnn.models.base import HybridModel, build_model, parameter_counts, seeded_module
from qhqcnn.models.registry import (
    ModelEntry,
    classical_twins,
    get_model,
    model_names,
    quantum_models,
    register_model,
)

__all__ = [
    "HybridModel",
    "ModelEntry",
    "build_model",
    "classical_twins",
    "get_model",
    "model_names",
    "parameter_counts",
    "quantum_models",
    "register_model",
    "seeded_module",
]
