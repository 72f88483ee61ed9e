"""The circuit-template container shared by every model family."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
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

    @classmethod
    def from_circuit(
        cls,
        circuit: QuantumCircuit,
        *,
        inputs: Iterable[Parameter],
        weights: Iterable[Parameter],
        observables: Sequence[SparsePauliOp | str] | None = None,
        output_names: Sequence[str] | None = None,
        name: str | None = None,
        init_scale: float = 0.1,
        description: str = "",
    ) -> CircuitTemplate:
        """A template from any Qiskit parameterized circuit.

        Args:
            circuit: the circuit (e.g. ``zz_feature_map(n).compose(real_amplitudes(n))``).
            inputs: the parameters that receive each sample's features, in feature order.
            weights: the trainable parameters, in the order of the layer's weight tensor.
            observables: what is measured, one output each (``SparsePauliOp`` or Pauli
                labels such as ``"ZZII"``); default ⟨Zᵢ⟩ on every qubit.
            output_names: a label per output (default: the Pauli labels).
            name: the template's name (default: the circuit's).
            init_scale: initial weights are drawn uniformly from ±``init_scale``·π.
            description: free text shown in exports.

        Every parameter of ``circuit`` must be an input or a weight, and none both.
        """
        inputs, weights = tuple(inputs), tuple(weights)
        overlap = set(inputs) & set(weights)
        if overlap:
            raise ValueError(f"parameters both input and weight: {sorted(p.name for p in overlap)}")
        unknown = (set(inputs) | set(weights)) - set(circuit.parameters)
        if unknown:
            raise ValueError(f"parameters not in the circuit: {sorted(p.name for p in unknown)}")
        unassigned = set(circuit.parameters) - set(inputs) - set(weights)
        if unassigned:
            names = sorted(p.name for p in unassigned)
            raise ValueError(f"circuit parameters neither input nor weight: {names}")
        if observables is None:
            observables, default_names = single_qubit_observables(circuit.num_qubits, ("Z",))
            output_names = output_names or default_names
        operators = tuple(SparsePauliOp(o) for o in observables)
        for operator in operators:
            if operator.num_qubits != circuit.num_qubits:
                raise ValueError(
                    f"observable on {operator.num_qubits} qubits for a "
                    f"{circuit.num_qubits}-qubit circuit"
                )
        names = tuple(output_names or ("+".join(o.paulis.to_labels()) for o in operators))
        if len(names) != len(operators):
            raise ValueError(f"{len(names)} output names for {len(operators)} observables")
        count = len(weights)

        def init_weights(rng: np.random.Generator) -> np.ndarray:
            return rng.uniform(-init_scale * np.pi, init_scale * np.pi, count)

        return cls(
            name=name or circuit.name,
            circuit=circuit,
            input_params=inputs,
            weight_params=weights,
            observables=operators,
            output_names=names,
            init_weights=init_weights,
            description=description,
        )

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
