"""Local testing mode: the fake device trimmed to the qubits the circuit uses.

The executor estimator measures every qubit of its ISA circuit, and local testing mode simulates
them all: that fails or crawls on fake_torino (133 qubits; see ``LOCAL_EXECUTOR_MAX_QUBITS`` in
qhqcnn.hardware.primitives) and wastes time on idle qubits of small devices. A circuit touches a
few qubits, and fake-device noise has no crosstalk, so the device restricted to those qubits
(their gate, readout and relaxation calibrations, re-indexed) gives the same simulation. The ISA
circuit is shrunk with :mod:`qhqcnn.backends.compact`; the local "device" is an ``AerSimulator``
built from the trimmed target. Real devices are never trimmed: the job record keeps the
full-width ISA circuit, which is what a real submission sends.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from qiskit.providers import BackendV2, Options
from qiskit.transpiler import Target


def trimmed_target(target: Target, physical: list[int]) -> Target:
    """``target`` on the qubits ``physical`` only, re-indexed ``physical[i] -> i``."""
    index = {q: i for i, q in enumerate(physical)}
    properties = target.qubit_properties
    new = Target(
        description=f"trimmed to {physical}",
        num_qubits=len(physical),
        dt=target.dt,
        qubit_properties=[properties[q] for q in physical] if properties else None,
    )
    for name, props in target.items():
        operation = target.operation_from_name(name)
        if props is None or None in props:  # global (e.g. by class): no per-qubit calibration
            new.add_instruction(operation, name=name)
            continue
        sub = {
            tuple(index[q] for q in qargs): value
            for qargs, value in props.items()
            if all(q in index for q in qargs)
        }
        if sub:
            new.add_instruction(operation, sub, name=name)
    return new


class TrimmedBackend(BackendV2):
    """A fake device restricted to some of its qubits (for local simulation only)."""

    def __init__(self, parent: Any, physical: list[int]) -> None:
        super().__init__(name=f"{parent.name}-trimmed", backend_version="1")
        self.parent_name = parent.name
        self.physical_qubits = list(physical)
        self._target = trimmed_target(parent.target, self.physical_qubits)

    @property
    def target(self) -> Target:
        return self._target

    @property
    def max_circuits(self) -> None:
        return None

    @classmethod
    def _default_options(cls) -> Options:
        return Options()

    def run(self, run_input, **options):  # pragma: no cover - only the simulator runs
        raise NotImplementedError("a trimmed device is only simulated")


@lru_cache(maxsize=8)
def _simulator(parent_name: str, physical: tuple[int, ...]):
    from qiskit_aer import AerSimulator

    from qhqcnn.backends.devices import get_fake_backend

    return AerSimulator.from_backend(TrimmedBackend(get_fake_backend(parent_name), list(physical)))


def needs_trimming(backend: Any, local: bool) -> bool:
    """Every local executor run is trimmed: required above ``LOCAL_EXECUTOR_MAX_QUBITS``, and
    on small devices it only drops idle qubits whose readout no observable uses (faster)."""
    return bool(local) and backend is not None


def trimmed_execution(backend_name: str, circuit, observables) -> tuple[Any, Any, list, list[int]]:
    """``(simulator, compact circuit, compact observables, physical qubits)`` for a local run."""
    from qhqcnn.backends.base import PreparedCircuit
    from qhqcnn.backends.compact import compact_circuit

    prepared = PreparedCircuit(circuit, tuple(observables), (), ())
    compact = compact_circuit(prepared)
    physical = list(compact.physical_qubits)
    simulator = _simulator(backend_name, tuple(physical))
    return simulator, compact.prepared.circuit, list(compact.prepared.observables), physical
