"""qhqcnn: hybrid quantum-classical CNNs for medical image classification, built on Qiskit.

The public API, by stage of the data flow (each name is imported on first use, so
``import qhqcnn`` stays fast and loads neither torch nor qiskit):

Configuration
    :class:`TrainConfig`, :class:`ModelSpec`
Data
    :class:`ArrayDataset` (your own images), :func:`load_split`, :func:`dataset_info`,
    :func:`available_datasets` (MedMNIST)
Circuits
    :class:`CircuitTemplate` (``CircuitTemplate.from_circuit`` for any Qiskit circuit),
    :func:`hqcnn_template`, :func:`quanv_template`, :func:`qcnn_template`,
    :func:`single_qubit_observables`
Backends
    :func:`make_backend`, :func:`register_backend`, :func:`available_backends`,
    :class:`ExecutionBackend`, :class:`PreparedCircuit`
Layers
    :class:`QuantumLayer`, :class:`Quanv2d`
Models
    :class:`HybridModel`, :func:`register_model`, :func:`build_model`, :func:`model_names`,
    :func:`parameter_counts`
Training
    :func:`train`, :class:`RunResult`, :class:`Trainer`, :class:`RunDir`
Evaluation
    :func:`evaluate_run`, :func:`evaluate_model`
Export
    :func:`export_trained_circuit`, :func:`bound_circuit`
Errors
    :class:`QhqcnnError` and its kinds :class:`ConfigError`, :class:`DataError`,
    :class:`BackendError`, :class:`TrainingError`, :class:`RunNotFoundError`

Hardware validation on IBM Quantum is :mod:`qhqcnn.hardware`; the reproduction study
:mod:`qhqcnn.study`. See ``docs/api.md`` for worked examples.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    # configuration and errors
    "TrainConfig": "qhqcnn.config",
    "ModelSpec": "qhqcnn.config",
    "QhqcnnError": "qhqcnn.errors",
    "ConfigError": "qhqcnn.errors",
    "DataError": "qhqcnn.errors",
    "BackendError": "qhqcnn.errors",
    "TrainingError": "qhqcnn.errors",
    "RunNotFoundError": "qhqcnn.errors",
    # data
    "ArrayDataset": "qhqcnn.data.arrays",
    "load_split": "qhqcnn.data.medmnist",
    "dataset_info": "qhqcnn.data.medmnist",
    "available_datasets": "qhqcnn.data.medmnist",
    # circuits
    "CircuitTemplate": "qhqcnn.circuits.template",
    "single_qubit_observables": "qhqcnn.circuits.template",
    "hqcnn_template": "qhqcnn.circuits.hqcnn",
    "quanv_template": "qhqcnn.circuits.quanv",
    "qcnn_template": "qhqcnn.circuits.quanv",
    # backends
    "ExecutionBackend": "qhqcnn.backends.base",
    "PreparedCircuit": "qhqcnn.backends.base",
    "make_backend": "qhqcnn.backends.base",
    "register_backend": "qhqcnn.backends.base",
    "available_backends": "qhqcnn.backends.base",
    # layers
    "QuantumLayer": "qhqcnn.nn.quantum_layer",
    "Quanv2d": "qhqcnn.nn.quanv2d",
    # models
    "HybridModel": "qhqcnn.models.base",
    "build_model": "qhqcnn.models.base",
    "parameter_counts": "qhqcnn.models.base",
    "register_model": "qhqcnn.models.registry",
    "model_names": "qhqcnn.models.registry",
    # training
    "train": "qhqcnn.training.pipeline",
    "RunResult": "qhqcnn.training.pipeline",
    "Trainer": "qhqcnn.training.trainer",
    "RunDir": "qhqcnn.training.rundir",
    # evaluation
    "evaluate_run": "qhqcnn.evaluation.evaluate",
    "evaluate_model": "qhqcnn.evaluation.evaluate",
    # export
    "export_trained_circuit": "qhqcnn.export.trained",
    "bound_circuit": "qhqcnn.export.trained",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'qhqcnn' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # what static tools and IDEs see; at run time __getattr__ imports lazily
    from qhqcnn.backends.base import (
        ExecutionBackend,
        PreparedCircuit,
        available_backends,
        make_backend,
        register_backend,
    )
    from qhqcnn.circuits.hqcnn import hqcnn_template
    from qhqcnn.circuits.quanv import qcnn_template, quanv_template
    from qhqcnn.circuits.template import CircuitTemplate, single_qubit_observables
    from qhqcnn.config import ModelSpec, TrainConfig
    from qhqcnn.data.arrays import ArrayDataset
    from qhqcnn.data.medmnist import available_datasets, dataset_info, load_split
    from qhqcnn.errors import (
        BackendError,
        ConfigError,
        DataError,
        QhqcnnError,
        RunNotFoundError,
        TrainingError,
    )
    from qhqcnn.evaluation.evaluate import evaluate_model, evaluate_run
    from qhqcnn.export.trained import bound_circuit, export_trained_circuit
    from qhqcnn.models.base import HybridModel, build_model, parameter_counts
    from qhqcnn.models.registry import model_names, register_model
    from qhqcnn.nn.quantum_layer import QuantumLayer
    from qhqcnn.nn.quanv2d import Quanv2d
    from qhqcnn.training.pipeline import RunResult, train
    from qhqcnn.training.rundir import RunDir
    from qhqcnn.training.trainer import Trainer
