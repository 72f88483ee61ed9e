"""Gate matrices and generators built with torch ops from an angle tensor, on its device.

The NumPy models of :mod:`.gates` build matrices on the host; these builders do the same from a
``(..., num_angles)`` float64 tensor, so that a batch on CUDA needs no host round trip for its
gates. They cover the models the compiler emits for rotation and U gates
(:class:`~.gates.UGate`, :class:`~.gates.ExponentialGate`, :class:`~.gates.ControlledGate` of
those, :class:`~.gates.FixedGate`); :func:`supported` tells whether a model has a torch
builder. Results are complex128 (the caller casts to the simulator's dtype), equal to the NumPy
models' to float rounding.
"""

from __future__ import annotations

import numpy as np
import torch

from .gates import ControlledGate, ExponentialGate, FixedGate, GateModel, UGate


def supported(model: GateModel) -> bool:
    """Whether :func:`matrices` and :func:`generators` accept ``model``."""
    if isinstance(model, ControlledGate):
        return supported(model.base)
    return isinstance(model, (UGate, ExponentialGate, FixedGate))


def _const(array: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.asarray(array), device=like.device).to(torch.complex128)


def _unit(phase: torch.Tensor) -> torch.Tensor:
    """``exp(i phase)`` for a real tensor."""
    return torch.polar(torch.ones_like(phase), phase)


def matrices(model: GateModel, angles: torch.Tensor) -> torch.Tensor:
    """``model``'s unitaries for angles ``(..., A)``: ``(..., d, d)`` complex128."""
    lead = angles.shape[:-1]
    if isinstance(model, FixedGate):
        return _const(model.matrix, angles).expand(lead + model.matrix.shape)
    if isinstance(model, UGate):
        theta, phi, lam = angles[..., 0], angles[..., 1], angles[..., 2]
        c = torch.cos(theta / 2).to(torch.complex128)
        s = torch.sin(theta / 2).to(torch.complex128)
        e_phi, e_lam = _unit(phi), _unit(lam)
        out = torch.stack([c, -e_lam * s, e_phi * s, e_phi * e_lam * c], -1)
        out = out.reshape(lead + (2, 2))
        if model.with_phase:
            out = out * _unit(angles[..., 3])[..., None, None]
        return out
    if isinstance(model, ExponentialGate):
        a = angles[..., 0]
        if model._diagonal is not None:
            diagonal = torch.as_tensor(model._diagonal, device=angles.device)
            return torch.diag_embed(_unit(-a[..., None] * diagonal))
        if model._pauli is not None:
            scale, pauli = model._pauli
            c = torch.cos(a * scale)[..., None, None]
            s = torch.sin(a * scale)[..., None, None]
            eye = torch.eye(model.dim, dtype=torch.complex128, device=angles.device)
            return c * eye - 1j * s * _const(pauli, angles)
        values = torch.as_tensor(model._values, device=angles.device)
        vectors = _const(model._vectors, angles)
        phases = _unit(-a[..., None] * values)
        return (vectors * phases[..., None, :]) @ vectors.conj().T
    if isinstance(model, ControlledGate):
        block = matrices(model.base, angles)
        eye = torch.eye(model.dim, dtype=torch.complex128, device=angles.device)
        return _embed_controlled(model, block, eye.expand(lead + eye.shape))
    raise NotImplementedError(f"no torch builder for {type(model).__name__}")


def generators(model: GateModel, angles: torch.Tensor) -> torch.Tensor:
    """``G^dagger dG/da_k`` for angles ``(..., A)``: ``(..., A, d, d)`` complex128."""
    lead = angles.shape[:-1]
    constant = model.constant_generators
    if constant is not None:
        return _const(constant, angles).expand(lead + constant.shape)
    if isinstance(model, UGate):
        theta, lam = angles[..., 0], angles[..., 2]
        c = torch.cos(theta / 2).to(torch.complex128)
        s = torch.sin(theta / 2).to(torch.complex128)
        e_lam = _unit(lam)
        zero = torch.zeros_like(c)
        rows = [
            [zero, -0.5 * e_lam, 0.5 * e_lam.conj(), zero],
            [1j * s * s, 1j * s * c * e_lam, 1j * s * c * e_lam.conj(), 1j * c * c],
            [zero, zero, zero, zero + 1j],
        ]
        if model.with_phase:
            rows.append([zero + 1j, zero, zero, zero + 1j])
        out = torch.stack([torch.stack(r, -1) for r in rows], -2)  # (..., A, 4)
        return out.reshape(lead + (model.num_angles, 2, 2))
    if isinstance(model, ControlledGate):
        block = generators(model.base, angles)
        zeros = block.new_zeros(block.shape[:-2] + (model.dim, model.dim))
        return _embed_controlled(model, block, zeros)
    raise NotImplementedError(f"no torch builder for {type(model).__name__}")


def _embed_controlled(model: ControlledGate, block: torch.Tensor, out: torch.Tensor):
    """``out`` (identity or zeros) with ``block`` in the controlled rows and columns."""
    index = torch.as_tensor(model._block, device=block.device)
    out = out.clone()
    out[..., index[:, None], index[None, :]] = block
    return out
