"""Compile a ``QuantumCircuit`` once into a cached :class:`Program`.

The program lists gate operations (model, qubits, angle slots) and an angle map from the
circuit's parameters, in ``circuit.parameters`` order (the order of PUB parameter values), to the
gate angles. Operations that are neither recognised gates nor dense constant matrices are
expanded through their Qiskit definitions, recursively, once per circuit.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence

from qiskit.circuit import ControlFlowOp, QuantumCircuit

from .expressions import AngleLike, build_angle_map
from .program import GateOp, Program
from .resolve import resolve

#: Instructions with no effect on the state.
IGNORED = frozenset({"barrier", "delay"})
#: Non-unitary instructions a statevector expectation value cannot honour.
NON_UNITARY = frozenset({"measure", "reset", "initialize", "store"})


class _Builder:
    """Accumulates operations, angle expressions and the global phase during compilation."""

    def __init__(self) -> None:
        self.ops: list[GateOp] = []
        self.angles: list[AngleLike] = []
        self.global_phase: AngleLike = 0.0

    def add(self, circuit: QuantumCircuit, qubit_map: Sequence[int], depth: int) -> None:
        if depth > 64:
            raise ValueError("circuit definitions nest too deeply to compile")
        self.global_phase = self.global_phase + circuit.global_phase
        for instruction in circuit.data:
            op = instruction.operation
            name = op.name
            if name in IGNORED:
                continue
            if name in NON_UNITARY or isinstance(op, ControlFlowOp) or instruction.clbits:
                raise ValueError(
                    f"the fast engine simulates unitary circuits only; found '{name}'. "
                    "Remove measurements, resets and classical control before estimating."
                )
            qubits = tuple(qubit_map[circuit.find_bit(q).index] for q in instruction.qubits)
            if name == "global_phase":
                self.global_phase = self.global_phase + op.params[0]
                continue
            resolved = resolve(op)
            if resolved is not None:
                model, expressions = resolved
                start = len(self.angles)
                self.angles.extend(expressions)
                slots = tuple(range(start, len(self.angles)))
                self.ops.append(GateOp(model, qubits, slots))
            elif op.definition is not None:
                self.add(op.definition, qubits, depth + 1)
            else:
                raise ValueError(f"the fast engine cannot simulate operation '{name}'")


def _compile(circuit: QuantumCircuit) -> Program:
    names = tuple(p.name for p in circuit.parameters)
    builder = _Builder()
    builder.add(circuit, tuple(range(circuit.num_qubits)), depth=0)
    expressions = list(builder.angles)
    phase_slot = None
    if builder.global_phase != 0:
        phase_slot = len(expressions)
        expressions.append(builder.global_phase)
    angle_map = build_angle_map(expressions, names)
    return Program(circuit.num_qubits, tuple(builder.ops), angle_map, names, phase_slot)


def _fingerprint(circuit: QuantumCircuit) -> tuple:
    """Cheap structural summary used to detect in-place edits of a cached circuit."""
    return (
        circuit.num_qubits,
        len(circuit.data),
        tuple(p.name for p in circuit.parameters),
        str(circuit.global_phase),
        tuple(circuit.count_ops().items()),
    )


class _CompileCache:
    """Programs keyed by circuit identity, validated by a fingerprint, dropped with the circuit."""

    def __init__(self) -> None:
        self._entries: dict[int, tuple[weakref.ref, tuple, Program]] = {}
        self._lock = threading.Lock()

    def get(self, circuit: QuantumCircuit) -> Program:
        key = id(circuit)
        fingerprint = _fingerprint(circuit)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0]() is circuit and entry[1] == fingerprint:
                return entry[2]
        program = _compile(circuit)
        with self._lock:
            ref = weakref.ref(circuit, lambda _, k=key: self._entries.pop(k, None))
            self._entries[key] = (ref, fingerprint, program)
        return program

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_CACHE = _CompileCache()


def compile_circuit(circuit: QuantumCircuit, *, cache: bool = True) -> Program:
    """The :class:`Program` of ``circuit`` (cached per circuit object unless ``cache=False``)."""
    if not isinstance(circuit, QuantumCircuit):
        raise TypeError(f"expected a QuantumCircuit, got {type(circuit).__name__}")
    return _CACHE.get(circuit) if cache else _compile(circuit)


def clear_compile_cache() -> None:
    """Forget all compiled programs."""
    _CACHE.clear()
