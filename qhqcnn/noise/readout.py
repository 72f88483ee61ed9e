"""Readout error as an effect on expectation values (optional; Aer's estimator ignores it).

Aer applies a noise model's ``ReadoutError`` to ``measure`` results only. ``EstimatorV2`` of
qiskit-aer computes expectation values with ``save_expectation_value``, which measures nothing,
so **its values ignore readout error**; by default this package matches that. With
``AerBackend(readout=True)`` each observable is replaced by the one whose exact expectation is
what a device measuring in the Pauli's eigenbasis would report with independent single-qubit
readout flips: a measured bit's sign s' has E[s' | s] = a + c·s with a = p10 − p01 and
c = 1 − p01 − p10, so a Pauli term P_A becomes Σ_{S⊆A} Π_{q∈A∖S} a_q · Π_{q∈S} c_q · P_S.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import combinations

import numpy as np
from qiskit.quantum_info import Pauli, SparsePauliOp
from qiskit_aer.noise import NoiseModel

from qhqcnn import _compat
from qhqcnn.errors import BackendError

MAX_SUPPORT = 12


def readout_flip_table(model: NoiseModel | None, num_qubits: int) -> dict[int, tuple[float, float]]:
    """``{qubit: (p01, p10)}`` of the single-qubit readout errors of ``model`` on its qubits."""
    from qhqcnn.noise.models import readout_flips

    if model is None:
        return {}
    correlated = [qs for qs in _compat.local_readout_errors(model) if len(qs) > 1]
    if correlated:
        raise BackendError(f"correlated readout errors on {correlated} are not supported")
    table = {}
    for q in range(num_qubits):
        flips = readout_flips(model, q)
        if flips is not None and flips != (0.0, 0.0):
            table[q] = flips
    return table


def apply_readout_error(
    observable: SparsePauliOp, flips: Mapping[int, tuple[float, float]]
) -> SparsePauliOp:
    """The observable whose exact expectation equals ``observable``'s measured with readout
    flips ``{qubit: (p01, p10)}`` (qubits not in ``flips`` read out perfectly)."""
    if not flips:
        return observable
    labels, coeffs = [], []
    for pauli, coeff in zip(observable.paulis, observable.coeffs, strict=True):
        support = [q for q in range(pauli.num_qubits) if pauli.x[q] or pauli.z[q]]
        noisy = [q for q in support if q in flips]
        if len(noisy) > MAX_SUPPORT:
            raise BackendError(f"readout transform of a weight-{len(noisy)} Pauli is too large")
        a = {q: flips[q][1] - flips[q][0] for q in noisy}
        c = {q: 1.0 - flips[q][0] - flips[q][1] for q in noisy}
        for size in range(len(noisy) + 1):
            for kept in combinations(noisy, size):
                dropped = [q for q in noisy if q not in kept]
                weight = np.prod([c[q] for q in kept]) * np.prod([a[q] for q in dropped])
                if weight == 0:
                    continue
                z, x = pauli.z.copy(), pauli.x.copy()
                z[dropped] = x[dropped] = False
                labels.append(Pauli((z, x)))  # (z, x) form: phase-free, Y stays Y
                coeffs.append(coeff * weight)
    return SparsePauliOp(labels, np.asarray(coeffs, dtype=complex)).simplify(atol=0)
