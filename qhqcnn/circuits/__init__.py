"""Qiskit parameterized circuit templates of the shipped models."""

from __future__ import annotations

from qhqcnn.circuits.hqcnn import (
    angle_encoding,
    entangling_layers,
    fourier_attention,
    fourier_ladder,
    hqcnn_template,
    rotation_layer,
    toffoli_ring,
)
from qhqcnn.circuits.template import CircuitTemplate, single_qubit_observables

__all__ = [
    "CircuitTemplate",
    "angle_encoding",
    "entangling_layers",
    "fourier_attention",
    "fourier_ladder",
    "hqcnn_template",
    "rotation_layer",
    "single_qubit_observables",
    "toffoli_ring",
]
