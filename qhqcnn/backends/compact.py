"""Shrink an ISA circuit on a 100+-qubit device to the few physical qubits it really uses.

The transpiled circuit keeps the device's width (133 qubits on Torino); a simulator given it
would allocate them all. The compact circuit has one qubit per *active* physical qubit (sorted),
the same gates in the same order, and observables restricted to those qubits, so noise models
re-indexed with the same map (:func:`qhqcnn.noise.models.remap_noise_model`) act on the same
gates as on the device.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from qiskit import QuantumCircuit
from qiskit.quantum_info import PauliList, SparsePauliOp

from qhqcnn.backends.base import PreparedCircuit
from qhqcnn.backends.transpile import active_qubits
from qhqcnn.errors import BackendError


@dataclass(frozen=True)
class CompactCircuit:
    """``prepared`` on ``len(physical_qubits)`` qubits; qubit i is device qubit ``physical[i]``."""

    prepared: PreparedCircuit
    physical_qubits: tuple[int, ...]

    @property
    def mapping(self) -> dict[int, int]:
        """Physical qubit -> compact index (the map to re-index noise models with)."""
        return {q: i for i, q in enumerate(self.physical_qubits)}


def observable_support(observable: SparsePauliOp) -> set[int]:
    """Qubits on which some term of ``observable`` is not the identity."""
    paulis = observable.paulis
    return {int(q) for q in range(observable.num_qubits) if (paulis.x[:, q] | paulis.z[:, q]).any()}


def restrict_observable(observable: SparsePauliOp, qubits: list[int]) -> SparsePauliOp:
    """``observable`` on ``qubits`` only (it must be the identity everywhere else)."""
    outside = observable_support(observable) - set(qubits)
    if outside:
        raise BackendError(f"observable acts on qubits {sorted(outside)} outside the circuit")
    paulis = observable.paulis
    return SparsePauliOp(
        PauliList.from_symplectic(paulis.z[:, qubits], paulis.x[:, qubits], paulis.phase),
        observable.coeffs,
    )


def compact_circuit(prepared: PreparedCircuit) -> CompactCircuit:
    """The circuit and observables of ``prepared`` on its active physical qubits only.

    The global phase is dropped: it changes no expectation value, and the symbolic phase that
    transpilation leaves makes every parameter binding slow.
    """
    circuit = prepared.circuit
    used = set(active_qubits(circuit))
    for observable in prepared.observables:
        used |= observable_support(observable)
    physical = sorted(used)
    index = {q: i for i, q in enumerate(physical)}
    compact = QuantumCircuit(len(physical), name=circuit.name)
    for instruction in circuit.data:
        if instruction.clbits:
            raise BackendError(
                f"cannot simulate {instruction.operation.name!r} with classical bits: the "
                "estimator circuit must not measure"
            )
        qubits = [index[circuit.find_bit(q).index] for q in instruction.qubits]
        compact.append(instruction.operation, qubits, copy=False)
    observables = tuple(restrict_observable(obs, physical) for obs in prepared.observables)
    info = {**prepared.info, "physical_qubits": physical, "simulated_qubits": len(physical)}
    return CompactCircuit(
        replace(prepared, circuit=compact, observables=observables, info=info), tuple(physical)
    )
