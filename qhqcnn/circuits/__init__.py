"""Qiskit parameterized circuit templates of the shipped models, and the encodings registry."""

from __future__ import annotations

from qhqcnn.circuits.encodings import (
    Encoding,
    amplitude_angles,
    amplitude_encoding,
    angle_encoding,
    encoding_names,
    get_encoding,
    patch_angle_encoding,
    pixel_angles,
    register_encoding,
)
from qhqcnn.circuits.hqcnn import (
    entangling_layers,
    fourier_attention,
    fourier_ladder,
    hqcnn_template,
    rotation_layer,
    toffoli_ring,
)
from qhqcnn.circuits.quanv import (
    qcnn_conv,
    qcnn_dense,
    qcnn_pool,
    qcnn_template,
    quanv_template,
    random_filter,
    trainable_filter,
)
from qhqcnn.circuits.template import CircuitTemplate, single_qubit_observables

__all__ = [
    "CircuitTemplate",
    "Encoding",
    "encoding_names",
    "get_encoding",
    "register_encoding",
    "amplitude_angles",
    "amplitude_encoding",
    "angle_encoding",
    "entangling_layers",
    "fourier_attention",
    "fourier_ladder",
    "hqcnn_template",
    "patch_angle_encoding",
    "pixel_angles",
    "qcnn_conv",
    "qcnn_dense",
    "qcnn_pool",
    "qcnn_template",
    "quanv_template",
    "random_filter",
    "rotation_layer",
    "single_qubit_observables",
    "toffoli_ring",
    "trainable_filter",
]
