"""Noise-aware simulation on qiskit-aer: noise models, the ``aer`` backend, and its engines."""

from __future__ import annotations

from qhqcnn.noise.models import (
    PARAMETRIC_KINDS,
    NoiseComponent,
    NoiseSource,
    describe_noise_model,
    load_noise,
    parametric_noise_model,
    parse_noise_spec,
    remap_noise_model,
    trim_noise_model,
)

__all__ = [
    "PARAMETRIC_KINDS",
    "NoiseComponent",
    "NoiseSource",
    "describe_noise_model",
    "load_noise",
    "parametric_noise_model",
    "parse_noise_spec",
    "remap_noise_model",
    "trim_noise_model",
]
