"""Pauli-sum observables in a form the simulators apply to batched states.

An observable ``O = sum_t c_t P_t`` is stored grouped by the X-mask of its Pauli strings:
``(O psi)[j] = sum_g w_g[j] * psi[j ^ x_g]`` with one weight vector ``w_g`` per distinct mask. Small
registers use the equivalent dense matrix. Conversions are cached by content.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch
from qiskit.primitives.containers.observables_array import ObservablesArray
from qiskit.quantum_info import SparseObservable, SparsePauliOp

_Z, _X, _Y = 1, 2, 3


@dataclass(eq=False)
class PauliSum:
    """``O = sum_g diag(weights[g]) X(x_masks[g])`` acting as ``(O psi)[j] = w_g[j] psi[j^x_g]``."""

    num_qubits: int
    x_masks: np.ndarray  # (G,) int64
    weights: np.ndarray  # (G, 2**n) complex128
    _tensors: dict = field(default_factory=dict, repr=False)

    @property
    def dim(self) -> int:
        return 1 << self.num_qubits

    def dense(self) -> np.ndarray:
        """The ``(D, D)`` matrix of the observable."""
        rows = np.arange(self.dim)
        matrix = np.zeros((self.dim, self.dim), dtype=np.complex128)
        for x, w in zip(self.x_masks, self.weights, strict=True):
            matrix[rows, rows ^ x] += w
        return matrix

    def tensor(self, kind: str, device: torch.device, dtype: torch.dtype):
        """Cached torch form: ``"dense"`` matrix or ``"groups"`` list of (perm, weights)."""
        key = (kind, device, dtype)
        if key not in self._tensors:
            if kind == "dense":
                value = torch.as_tensor(self.dense(), device=device).to(dtype)
            else:
                rows = np.arange(self.dim)
                value = [
                    (
                        None if x == 0 else torch.as_tensor(rows ^ x, device=device),
                        torch.as_tensor(w, device=device).to(dtype),
                    )
                    for x, w in zip(self.x_masks, self.weights, strict=True)
                ]
            self._tensors[key] = value
        return self._tensors[key]


def _from_sparse_observable(obs: SparseObservable) -> PauliSum:
    obs = obs.as_paulis()
    n = obs.num_qubits
    terms = np.asarray(obs.bit_terms, dtype=np.int64)
    indices = np.asarray(obs.indices, dtype=np.int64)
    bounds = np.asarray(obs.boundaries, dtype=np.int64)
    coeffs = np.asarray(obs.coeffs, dtype=np.complex128)
    rows = np.arange(1 << n, dtype=np.int64)
    groups: dict[int, np.ndarray] = {}
    for t, coeff in enumerate(coeffs):
        bits, qubits = terms[bounds[t] : bounds[t + 1]], indices[bounds[t] : bounds[t + 1]]
        x = int(np.bitwise_or.reduce(((bits & _X) != 0) << qubits, initial=0))
        z = int(np.bitwise_or.reduce(((bits & _Z) != 0) << qubits, initial=0))
        num_y = int(np.count_nonzero(bits == _Y))
        # P|i> = i^nY (-1)^popcount(i & z) |i ^ x>, so (P psi)[j] = phase(j ^ x) psi[j ^ x].
        sign = 1 - 2 * (np.bitwise_count((rows ^ x) & z).astype(np.int64) & 1)
        weight = coeff * (1j**num_y) * sign
        groups[x] = groups[x] + weight if x in groups else weight
    masks = np.fromiter(groups, dtype=np.int64, count=len(groups))
    weights = np.stack(list(groups.values())) if groups else np.zeros((0, 1 << n), complex)
    return PauliSum(n, masks, weights)


class _PauliSumCache:
    """Content-keyed cache of conversions (bounded, thread-safe)."""

    def __init__(self, maxsize: int = 512) -> None:
        self._entries: OrderedDict[tuple, PauliSum] = OrderedDict()
        self._lock = threading.Lock()
        self._maxsize = maxsize

    def get(self, key: tuple, build) -> PauliSum:
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None:
                self._entries.move_to_end(key)
                return hit
        value = build()
        with self._lock:
            self._entries[key] = value
            if len(self._entries) > self._maxsize:
                self._entries.popitem(last=False)
        return value


_CACHE = _PauliSumCache()


def _sparse_observable_key(obs: SparseObservable) -> tuple:
    return (
        "so",
        obs.num_qubits,
        np.asarray(obs.bit_terms, dtype=np.uint8).tobytes(),
        np.asarray(obs.indices, dtype=np.uint32).tobytes(),
        np.asarray(obs.boundaries, dtype=np.uintp).tobytes(),
        np.asarray(obs.coeffs).tobytes(),
    )


def pauli_content_key(observable: SparsePauliOp) -> tuple:
    """The content of a ``SparsePauliOp`` as bytes: qubit count, X and Z bits, phases, coefficients.
    The phases are read from the Pauli list's stored group phase where it has one (``phase``
    recomputes them from the Y count on every access)."""
    paulis = observable.paulis
    raw = getattr(paulis, "_phase", None)
    phase = ("raw", raw.tobytes()) if isinstance(raw, np.ndarray) else ("y", paulis.phase.tobytes())
    return (
        observable.num_qubits,
        paulis.x.tobytes(),
        paulis.z.tobytes(),
        phase,
        observable.coeffs.tobytes(),
    )


def pauli_sum(observable) -> PauliSum:
    """Convert anything Qiskit's ``ObservablesArray`` accepts (validated the same way)."""
    if isinstance(observable, SparseObservable):
        return _CACHE.get(
            _sparse_observable_key(observable), lambda: _from_sparse_observable(observable)
        )
    if isinstance(observable, SparsePauliOp):
        key = ("spo", *pauli_content_key(observable))
    else:
        key = None
    if key is None:
        return pauli_sum(ObservablesArray.coerce_observable(observable))
    return _CACHE.get(
        key, lambda: _from_sparse_observable(ObservablesArray.coerce_observable(observable))
    )


def apply_observables(
    psi: torch.Tensor, observables: list[PauliSum], pairs: np.ndarray | None, dense: bool
) -> torch.Tensor:
    """Bra vectors ``O_k psi_r`` for rows ``r`` and observables ``k = pairs[r, m]``.

    ``psi`` has shape ``(R, D)``. ``pairs`` (``(R, M)`` ints, ``-1`` = none) selects the
    observables per row; ``None`` means every row uses all observables in order (``M = K``).
    Returns ``(R, M, D)``.
    """
    rows, dim = psi.shape
    device, dtype = psi.device, psi.dtype
    if dense:
        if pairs is None:
            out = psi @ _dense_wide(observables, device, dtype)
            return out.view(rows, len(observables), dim)
        mats = torch.stack([o.tensor("dense", device, dtype) for o in observables])  # (K, D, D)
        zero = torch.zeros((1, dim, dim), dtype=dtype, device=device)
        mats = torch.cat([mats, zero])
        index = torch.as_tensor(np.where(pairs < 0, len(observables), pairs), device=device)
        return (mats[index] @ psi[:, None, :, None]).squeeze(-1)
    width = len(observables) if pairs is None else pairs.shape[1]
    out = torch.zeros((rows, width, dim), dtype=dtype, device=device)
    for k, obs in enumerate(observables):
        if pairs is None:
            row_idx, col_idx = slice(None), k
            states = psi
        else:
            r_np, m_np = np.nonzero(pairs == k)
            if r_np.size == 0:
                continue
            row_idx = torch.as_tensor(r_np, device=device)
            col_idx = torch.as_tensor(m_np, device=device)
            states = psi[row_idx]
        acc = torch.zeros_like(states)
        for perm, weight in obs.tensor("groups", device, dtype):
            acc += weight * (states if perm is None else states[:, perm])
        out[row_idx, col_idx] = acc
    return out


def _dense_wide(observables: list[PauliSum], device, dtype) -> torch.Tensor:
    """The dense observables side by side, ``(D, K D)`` with ``[b, (k, a)] = O_k[a, b]``
    (cached on the first observable, for this list of observables)."""
    key = ("dense-wide", tuple(map(id, observables)), device, dtype)
    cache = observables[0]._tensors
    hit = cache.get(key)
    if hit is not None and all(a is b for a, b in zip(hit[1], observables, strict=True)):
        return hit[0]
    mats = torch.stack([o.tensor("dense", device, dtype) for o in observables])  # (K, D, D)
    wide = mats.reshape(-1, mats.shape[-1]).T.contiguous()
    cache[key] = (wide, list(observables))
    return wide


def _diagonal_weights(observables: list[PauliSum], device, dtype) -> tuple[torch.Tensor, list]:
    """``(D, K)`` weights of the diagonal (X-mask 0) parts of the observables, and the
    off-diagonal groups ``[(k, perm, weights)]``; cached on the first observable."""
    key = ("diag", tuple(map(id, observables)), device, dtype)
    cache = observables[0]._tensors
    hit = cache.get(key)
    if hit is not None and all(a is b for a, b in zip(hit[2], observables, strict=True)):
        return hit[0], hit[1]
    dim = observables[0].dim
    diagonal = np.zeros((dim, len(observables)), dtype=np.complex128)
    rest = []
    rows = np.arange(dim)
    for k, obs in enumerate(observables):
        for x, w in zip(obs.x_masks, obs.weights, strict=True):
            if x == 0:
                diagonal[:, k] += w
            else:
                perm = torch.as_tensor(rows ^ int(x), device=device)
                rest.append((k, perm, torch.as_tensor(w, device=device).to(dtype)))
    diag = torch.as_tensor(diagonal, device=device).to(dtype)
    cache[key] = (diag, rest, list(observables))
    return diag, rest


def expectation_values(psi: torch.Tensor, observables: list[PauliSum]) -> torch.Tensor:
    """``Re <psi_r| O_k |psi_r>`` ``(R, K)`` without forming the ``(R, K, D)`` images: the
    diagonal parts of all observables in one real GEMM against ``|psi|^2``."""
    diag, rest = _diagonal_weights(observables, psi.device, psi.dtype)
    probs = psi.real.square() + psi.imag.square()
    values = probs @ diag.real
    for k, perm, weight in rest:
        values[:, k] += (psi.conj() * weight * psi[:, perm]).real.sum(-1)
    return values


def weighted_image(psi: torch.Tensor, observables: list[PauliSum], coeffs: torch.Tensor):
    """``sum_k coeffs[r, k] O_k |psi_r>``: ``(R, D)`` (one co-state per row)."""
    diag, rest = _diagonal_weights(observables, psi.device, psi.dtype)
    coeffs = coeffs.to(psi.dtype)
    out = (coeffs @ diag.T) * psi
    for k, perm, weight in rest:
        out += coeffs[:, k, None] * weight * psi[:, perm]
    return out
