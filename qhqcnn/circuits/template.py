"""The circuit-template container shared by every model family."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter
from qiskit.quantum_info import SparsePauliOp


@dataclass(frozen=True)
class CircuitTemplate:
    """A parameterized circuit with its inputs, trainable weights and measured observables.

    ``circuit`` is a Qiskit template: ``input_params`` receive the classical features of one
    sample, ``weight_params`` are trained. ``observables[k]`` is the k-th output of the layer and
    ``output_names[k]`` its label (e.g. ``"Z0"``). ``init_weights`` draws initial weights.
    """

    name: str
    circuit: QuantumCircuit
    input_params: tuple[Parameter, ...]
    weight_params: tuple[Parameter, ...]
    observables: tuple[SparsePauliOp, ...]
    output_names: tuple[str, ...]
    init_weights: Callable[[np.random.Generator], np.ndarray] = field(repr=False)
    description: str = ""

    @property
    def num_qubits(self) -> int:
        return self.circuit.num_qubits

    @property
    def num_inputs(self) -> int:
        return len(self.input_params)

    @property
    def num_weights(self) -> int:
        return len(self.weight_params)

    @property
    def num_outputs(self) -> int:
        return len(self.observables)

    def summary(self) -> dict:
        """Qubits, parameter counts, depth and gate counts (a JSON-ready dict)."""
        ops = self.circuit.decompose(reps=0).count_ops()
        return {
            "name": self.name,
            "num_qubits": self.num_qubits,
            "num_inputs": self.num_inputs,
            "num_weights": self.num_weights,
            "num_outputs": self.num_outputs,
            "outputs": list(self.output_names),
            "depth": self.circuit.depth(),
            "gate_counts": {str(k): int(v) for k, v in ops.items()},
        }


def single_qubit_observables(
    num_qubits: int, paulis: Sequence[str] = ("Z", "X")
) -> tuple[tuple[SparsePauliOp, ...], tuple[str, ...]]:
    """⟨P_i⟩ on every qubit i for each Pauli letter P, in the order P-major (Z0..Zn-1, X0..)."""
    observables, names = [], []
    for pauli in paulis:
        if pauli not in ("X", "Y", "Z"):
            raise ValueError(f"unknown single-qubit Pauli {pauli!r}")
        for qubit in range(num_qubits):
            observables.append(
                SparsePauliOp.from_sparse_list([(pauli, [qubit], 1.0)], num_qubits=num_qubits)
            )
            names.append(f"{pauli}{qubit}")
    return tuple(observables), tuple(names)
