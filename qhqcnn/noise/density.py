"""Vectorized density-matrix simulation in torch: exact noisy values and adjoint gradients.

The unitary part comes from the exact engine's compiled :class:`~qhqcnn.engine.Program` (gate
models, qubits, the affine parameter → angle map); the noise from the (re-indexed) Aer noise model,
with Aer's rules: after every instruction, the local error of ``(name, qubits)`` if the model has
one, else the all-qubit error of ``name``; error terms of probability ≤ 1e-10 dropped, as Aer does.

States are density matrices in the Pauli (Liouville) representation: the real vector
r_P = Tr(P ρ) over the 4ⁿ Pauli strings, stored as an ``(R, 4, …, 4)`` tensor for a batch of R
parameter rows. Gates and channels are real Pauli transfer matrices on their qubits, so evolution
is one small real GEMM per step and ⟨P⟩ is read off r directly. Constant gates are fused with
their noise and then with each other into blocks of up to two qubits wherever the circuit's order
allows (:func:`fuse_blocks`; a parameterized gate is a barrier on its own qubits only): the
528-instruction FakeTorino ISA circuit of the HQCNN template runs as 165 steps, 72 of them RZ.

Readout errors are NOT applied, exactly like Aer's ``EstimatorV2`` (``save_expectation_value``
measures nothing); ``AerBackend(readout=True)`` folds them into the observables instead.
Gradients: the adjoint method (:func:`_adjoint`), one forward pass of the states and one reverse
sweep of the co-states of all observables at once, with dT/da of every parameterized gate exact
(a constant generator for ``exp(−iaH)`` gates, the gate model's generators otherwise); vectors
stay shared (batch 1) where all rows agree, so with angle-encoded inputs at the start of the
circuit only the state carries the batch; the gradients of those per-row gates come from tangents
(forward mode) or a per-row co-state sweep, whichever moves fewer vectors. One parameter row runs
the same sweep in NumPy (:func:`_adjoint_shared`: at these sizes torch's per-op dispatch was most
of the time). Pulled back to the circuit parameters by the program's angle map.
:func:`_simulate_autograd` (torch autograd through :func:`evolve`) is the reference.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from qiskit.circuit import Parameter, QuantumCircuit
from qiskit.primitives import BaseEstimatorV2
from qiskit.primitives.containers import DataBin, EstimatorPubLike, PrimitiveResult, PubResult
from qiskit.primitives.containers.estimator_pub import EstimatorPub
from qiskit.providers import Options
from qiskit.quantum_info import SparseObservable, SparsePauliOp, SuperOp
from qiskit.quantum_info.operators.base_operator import BaseOperator
from qiskit_aer.noise import NoiseModel
from qiskit_machine_learning.gradients import EstimatorGradientResult

from qhqcnn import _compat
from qhqcnn.engine import ControlledGate, ExponentialGate, FixedGate, UGate, compile_circuit
from qhqcnn.engine.batching import index_by_identity, unique_rows
from qhqcnn.engine.compile import IGNORED
from qhqcnn.engine.estimator import coerce_pubs, parameter_table
from qhqcnn.engine.gradient import InlineGradient
from qhqcnn.engine.gradient import parameter_rows as gradient_rows
from qhqcnn.engine.jobs import InlineJob
from qhqcnn.engine.program import Program
from qhqcnn.engine.resolve import resolve
from qhqcnn.errors import BackendError

DTYPE = torch.complex128
#: Rough cap on the autograd memory of one chunk of rows.
MEMORY_BUDGET = 1 << 29


# -- channels -------------------------------------------------------------------------------------
#: Aer keeps only the terms of a QuantumError with probability above this (``QuantumError::
#: threshold_`` in its C++ core) and does not renormalise; we do the same to match it to ~1e-15
#: (the exact channel differs by ~1e-9 per two-qubit gate on IBM fake backends).
AER_PROBABILITY_THRESHOLD = 1e-10


def superop(error, threshold: float = AER_PROBABILITY_THRESHOLD) -> np.ndarray:
    """Local superoperator S of a ``QuantumError`` as Aer applies it: vec(ρ')[a·m+b] =
    Σ S[a·m+b, c·m+d] ρ[c, d] (row-major vec; error qubit j is bit j of the local index)."""
    m = 1 << error.num_qubits
    data = np.zeros((m * m, m * m), dtype=complex)
    for circuit, probability in zip(error.circuits, error.probabilities, strict=True):
        if probability > threshold:
            data += probability * SuperOp(circuit).data  # Qiskit: column-major vec
    return data.reshape(m, m, m, m).transpose(1, 0, 3, 2).reshape(m * m, m * m)


def instruction_error(model: NoiseModel | None, name: str, qubits: tuple[int, ...]):
    """The error Aer applies after ``name`` on ``qubits``: local, else all-qubit, else None."""
    if model is None:
        return None
    local = _compat.local_quantum_errors(model).get(name, {}).get(qubits)
    return local if local is not None else _compat.default_quantum_errors(model).get(name)


def _instruction_keys(circuit: QuantumCircuit) -> list[tuple[str, tuple[int, ...]]]:
    """``(name, qubits)`` of the instructions the engine compiles to one op each."""
    keys = []
    for instruction in circuit.data:
        name = instruction.operation.name
        if name in IGNORED:
            continue
        if resolve(instruction.operation) is None:
            raise BackendError(
                f"the density-matrix engine needs gates it can map one to one (got {name!r}); "
                "transpile the circuit to its basis first"
            )
        keys.append((name, tuple(circuit.find_bit(q).index for q in instruction.qubits)))
    return keys


# -- Pauli transfer matrices ----------------------------------------------------------------------
_PAULI = np.array([[[1, 0], [0, 1]], [[0, 1], [1, 0]], [[0, -1j], [1j, 0]], [[1, 0], [0, -1]]])
_PAULI_INDEX = {"I": 0, "X": 1, "Y": 2, "Z": 3}


def pauli_matrices(num_qubits: int) -> np.ndarray:
    """The 4^k Pauli matrices, index Σ p_j 4^j (qubit j = bit j of the matrix index)."""
    mats = np.ones((1, 1, 1), dtype=complex)
    for _ in range(num_qubits):
        mats = np.einsum("pab,qcd->qpcadb", mats, _PAULI).reshape(
            4 * mats.shape[0], 2 * mats.shape[1], 2 * mats.shape[2]
        )
    return mats


def ptm_of_superop(s: np.ndarray) -> np.ndarray:
    """Pauli transfer matrix R_ij = Tr(P_i E(P_j)) / m of a row-major superop ``s``."""
    m = int(round(np.sqrt(s.shape[0])))
    paulis = pauli_matrices(m.bit_length() - 1)
    images = (s @ paulis.reshape(len(paulis), -1).T).T.reshape(-1, m, m)  # E(P_j)
    return np.einsum("iab,jba->ij", paulis, images).real / m


def ptm_of_unitary(u: np.ndarray) -> np.ndarray:
    return ptm_of_superop(np.kron(u, u.conj()))


def torch_matrices(model, angles: torch.Tensor) -> torch.Tensor:
    """Differentiable ``(R, d, d)`` unitaries of a gate model for angles ``(R, num_angles)``."""
    if isinstance(model, ExponentialGate):
        values, vectors = np.linalg.eigh(model.hamiltonian)
        vecs = torch.as_tensor(vectors, dtype=DTYPE)
        phases = torch.exp(-1j * angles[:, :1].to(DTYPE) * torch.as_tensor(values, dtype=DTYPE))
        return (vecs * phases[:, None, :]) @ vecs.conj().T
    if isinstance(model, UGate):
        theta, phi, lam = (angles[:, k].to(DTYPE) for k in range(3))
        c, s = torch.cos(theta / 2), torch.sin(theta / 2)
        e_phi, e_lam = torch.exp(1j * phi), torch.exp(1j * lam)
        out = torch.stack([c, -e_lam * s, e_phi * s, e_phi * e_lam * c], dim=-1).reshape(-1, 2, 2)
        if model.with_phase:
            out = out * torch.exp(1j * angles[:, 3].to(DTYPE))[:, None, None]
        return out
    if isinstance(model, ControlledGate):
        base = torch_matrices(model.base, angles)
        block = torch.as_tensor(model._block)
        out = torch.eye(model.dim, dtype=DTYPE).repeat(angles.shape[0], 1, 1)
        out[:, block[:, None], block[None, :]] = base
        return out
    if isinstance(model, FixedGate):
        return torch.as_tensor(model.matrix, dtype=DTYPE).expand(angles.shape[0], -1, -1)
    raise BackendError(f"the density-matrix engine cannot simulate gate model {model!r}")


def torch_ptms(unitaries: torch.Tensor, paulis: torch.Tensor) -> torch.Tensor:
    """``(R, m², m²)`` real PTMs of ``(R, m, m)`` unitaries (differentiable)."""
    m = unitaries.shape[-1]
    images = unitaries[:, None] @ paulis[None] @ unitaries.conj().transpose(1, 2)[:, None]
    return torch.einsum("iab,rjba->rij", paulis, images).real / m


# -- the noisy program ----------------------------------------------------------------------------
#: Constant steps (gates fused with their noise) are multiplied into blocks of at most this many
#: qubits: a 16×16 PTM costs about as much to apply as a 4×4 one, a 64×64 one several times more.
MAX_FUSED_QUBITS = 2

#: Kinds of parameterized steps: ``phase`` (one-qubit diagonal ``exp(−iaH)``, RZ/P: a rotation of
#: the qubit's X/Y Pauli components), ``exp`` (any other ``exp(−iaH)``: dT/da = L·T with a constant
#: generator L), ``generic`` (U gates, …: dT/da from the gate model's generators, per row).
PARAMETRIC_KINDS = ("phase", "exp", "generic")


@dataclass(eq=False)
class Step:
    """A constant PTM (gates and their noise, fused), or one parameterized gate (noiseless: the
    noise Aer applies after it is the next, constant, step)."""

    qubits: tuple[int, ...]
    ptm: torch.Tensor | None = None  # constant (m², m²)
    model: object = None
    slots: tuple[int, ...] = ()
    paulis: torch.Tensor | None = None  # (m², m, m) complex, for parameterized gates
    kind: str = "const"  # or one of PARAMETRIC_KINDS
    generator: torch.Tensor | None = None  # ``exp``/``phase``: real (m², m²) L, dT/da = L T
    scale: float = 0.0  # ``phase``: the X/Y rotation angle is scale · a


@dataclass(frozen=True, eq=False)
class NoisyProgram:
    """A compiled program with Aer's errors attached, as Pauli-transfer steps."""

    program: Program
    steps: tuple[Step, ...]
    #: ``((name, qubits), error or None)`` for every distinct instruction key looked up in the
    #: noise model (empty for no or an ideal model): the cache checks them against the model.
    errors: tuple = ()
    #: Per-program data of the one-row NumPy path (:func:`_shared_plan`), built on first use.
    plans: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def num_qubits(self) -> int:
        return self.program.num_qubits


def ptm_generator(hamiltonian: np.ndarray) -> np.ndarray:
    """Real PTM L of ρ ↦ −i[H, ρ], so that d/da PTM(exp(−iaH)) = L · PTM(exp(−iaH))."""
    eye = np.eye(hamiltonian.shape[0])
    return ptm_of_superop(-1j * (np.kron(hamiltonian, eye) - np.kron(eye, hamiltonian.T)))


def embed_ptm(ptm: np.ndarray, qubits: Sequence[int], target: Sequence[int]) -> np.ndarray:
    """A PTM on ``qubits`` as the PTM on ``target`` (a superset; identity on the other qubits)."""
    if tuple(qubits) == tuple(target):
        return ptm
    k = len(target)
    basis = torch.eye(4**k, dtype=torch.float64).reshape((4**k,) + (4,) * k)
    local = [list(target).index(q) for q in qubits]
    images = _apply_const(basis, torch.as_tensor(ptm), local)  # images[b] = PTM · e_b
    return images.reshape(4**k, 4**k).T.numpy().copy()


def _exponential_hamiltonian(model) -> np.ndarray | None:
    """H of a one-angle gate that is exactly ``exp(−iaH)`` (also controlled), else None."""
    if isinstance(model, ExponentialGate):
        return model.hamiltonian
    if isinstance(model, ControlledGate) and _exponential_hamiltonian(model.base) is not None:
        return 1j * model.constant_generators[0]  # generator −iH embedded in the block
    return None


def _parametric_step(op, paulis: torch.Tensor) -> Step:
    step = Step(op.qubits, model=op.model, slots=op.slots, paulis=paulis, kind="generic")
    hamiltonian = _exponential_hamiltonian(op.model)
    if hamiltonian is None:
        return step
    h = np.asarray(hamiltonian)
    step.generator = torch.as_tensor(ptm_generator(h))
    step.kind = "exp"
    if len(op.qubits) == 1 and h[0, 1] == 0 and h[1, 0] == 0:
        step.kind = "phase"  # RZ(φ) up to a global phase, φ = scale · a
        step.scale = float((h[0, 0] - h[1, 1]).real)
    return step


@dataclass(eq=False)
class _Block:
    """A step while the program is being fused: constant PTM (numpy) or a parameterized op."""

    qubits: tuple[int, ...]
    ptm: np.ndarray | None = None
    op: object = None


def _merge(first: _Block, then: _Block, limit: int) -> _Block | None:
    """``then ∘ first`` as one constant block, if both are constant and fit in ``limit`` qubits."""
    if first.ptm is None or then.ptm is None:
        return None
    union = tuple(sorted(set(first.qubits) | set(then.qubits)))
    if len(union) > limit:
        return None
    ptm = embed_ptm(then.ptm, then.qubits, union) @ embed_ptm(first.ptm, first.qubits, union)
    return _Block(union, ptm)


def fuse_blocks(blocks: list[_Block], limit: int = MAX_FUSED_QUBITS) -> list[_Block]:
    """Multiply constant blocks together where the circuit's order allows it.

    A constant block moves back to just after the latest earlier block that shares a qubit with
    it (everything in between acts on other qubits, so commutes with it) and is multiplied into
    that block when the latter is constant and the union has at most ``limit`` qubits; then the
    same forwards (into the earliest later block sharing a qubit). Parameterized gates are
    barriers on their own qubits only. Repeated until nothing changes. Each error channel stays
    right after its own gate, so the product is exactly Aer's sequence of operations.
    """
    blocks = list(blocks)
    changed = True
    while changed:
        changed = False
        out: list[_Block] = []
        for block in blocks:  # backwards moves
            target = _last_overlap(out, block.qubits)
            merged = None if target is None else _merge(out[target], block, limit)
            if merged is None:
                out.append(block)
            else:
                out[target] = merged
                changed = True
        rev: list[_Block] = []
        for block in reversed(out):  # forwards moves
            target = _last_overlap(rev, block.qubits)
            merged = None if target is None else _merge(block, rev[target], limit)
            if merged is None:
                rev.append(block)
            else:
                rev[target] = merged
                changed = True
        blocks = rev[::-1]
    return blocks


def _last_overlap(blocks: list[_Block], qubits: tuple[int, ...]) -> int | None:
    wanted = set(qubits)
    for i in range(len(blocks) - 1, -1, -1):
        if wanted.intersection(blocks[i].qubits):
            return i
    return None


def build_noisy_program(
    circuit: QuantumCircuit, model: NoiseModel | None, *, fuse: int = MAX_FUSED_QUBITS
) -> NoisyProgram:
    """Compile ``circuit`` with the engine and attach the errors of ``model`` to its ops.

    Every instruction becomes its gate followed by its error (Aer's order); constant gates carry
    their error in one PTM, a parameterized gate is followed by a constant step for its error.
    Constant steps are then fused into blocks of at most ``fuse`` qubits (:func:`fuse_blocks`;
    ``fuse=0`` keeps one step per gate).
    """
    program = compile_circuit(circuit)
    noisy = model is not None and not model.is_ideal()
    keys = _instruction_keys(circuit) if noisy else [None] * len(program.ops)
    if len(keys) != len(program.ops):
        raise BackendError("compiled program and circuit instructions do not align")
    blocks: list[_Block] = []
    noise_ptms: dict[int, np.ndarray] = {}
    errors: dict[tuple, object] = {}
    for op, key in zip(program.ops, keys, strict=True):
        error = instruction_error(model, *key) if key is not None else None
        if key is not None:
            errors.setdefault(key, error)
        if error is not None and id(error) not in noise_ptms:
            noise_ptms[id(error)] = ptm_of_superop(superop(error))
        noise = noise_ptms[id(error)] if error is not None else None
        if op.is_fixed:
            ptm = ptm_of_unitary(op.model.matrix)
            blocks.append(_Block(op.qubits, ptm if noise is None else noise @ ptm))
            continue
        blocks.append(_Block(op.qubits, op=op))
        if noise is not None:
            blocks.append(_Block(op.qubits, noise))
    if fuse:
        blocks = fuse_blocks(blocks, fuse)
    pauli_tensors: dict[int, torch.Tensor] = {}
    steps: list[Step] = []
    for block in blocks:
        if block.op is None:
            steps.append(Step(block.qubits, ptm=torch.as_tensor(block.ptm)))
            continue
        k = len(block.qubits)
        if k not in pauli_tensors:
            pauli_tensors[k] = torch.as_tensor(pauli_matrices(k), dtype=DTYPE)
        steps.append(_parametric_step(block.op, pauli_tensors[k]))
    return NoisyProgram(program, tuple(steps), tuple(errors.items()))


def _same_noise(noisy: NoisyProgram, model: NoiseModel | None) -> bool:
    """Whether ``model`` still attaches the errors ``noisy`` was built with (the same error
    objects for every instruction key of the circuit; or still no noise at all): catches
    errors added to, or replaced in, the model after the program was built."""
    if not noisy.errors:
        return model is None or model.is_ideal()
    return model is not None and all(
        instruction_error(model, *key) is error for key, error in noisy.errors
    )


class _ProgramCache:
    """Noisy programs keyed by (circuit, noise model) identity, dropped with the circuit and
    rebuilt when the circuit (compile fingerprint) or the model's errors for it change."""

    def __init__(self) -> None:
        self._entries: dict[tuple[int, int], tuple[weakref.ref, NoisyProgram]] = {}
        self._lock = threading.Lock()

    def get(self, circuit: QuantumCircuit, model: NoiseModel | None) -> NoisyProgram:
        key = (id(circuit), id(model))
        with self._lock:
            entry = self._entries.get(key)
        program = compile_circuit(circuit)
        if (
            entry is not None
            and entry[0]() is circuit
            and entry[1].program is program
            and _same_noise(entry[1], model)
        ):
            return entry[1]
        noisy = build_noisy_program(circuit, model)
        with self._lock:
            ref = weakref.ref(circuit, lambda _, k=key: self._entries.pop(k, None))
            self._entries[key] = (ref, noisy)
        return noisy


_CACHE = _ProgramCache()


# -- evolution ------------------------------------------------------------------------------------
# Pauli vectors are tensors (..., 4, …, 4) whose last n axes are the qubits, qubit q on axis −1 − q
# (so the flat index is Σ p_q 4^q): states (B, 4, …, 4), co-states (B, M, 4, …, 4), where the
# batch B is 1 while every row still shares the same vector and R (the rows) after that.
def _local_axes(qubits: Sequence[int]) -> list[int]:
    return [-1 - q for q in reversed(qubits)]  # most significant local digit first


def _apply_const(x: torch.Tensor, ptm: torch.Tensor, qubits: Sequence[int]) -> torch.Tensor:
    """Constant local PTM ``(m², m²)`` on ``qubits`` of every vector in ``x``: one GEMM."""
    axes, front = _local_axes(qubits), list(range(len(qubits)))
    t = x.movedim(axes, front)
    shape = t.shape
    return (ptm @ t.reshape(ptm.shape[1], -1)).reshape(shape).movedim(front, axes)


def _apply_rows(x: torch.Tensor, ptm: torch.Tensor, qubits: Sequence[int]) -> torch.Tensor:
    """Per-row local PTMs ``(R, m², m²)`` on ``x (1 or R, …)``: one batched GEMM."""
    if x.shape[0] != ptm.shape[0]:
        x = x.expand((ptm.shape[0],) + x.shape[1:])
    axes, front = _local_axes(qubits), list(range(1, len(qubits) + 1))
    t = x.movedim(axes, front)
    shape = t.shape
    out = torch.bmm(ptm, t.reshape(ptm.shape[0], ptm.shape[1], -1))
    return out.reshape(shape).movedim(front, axes)


#: One-qubit PTM of a rotation by φ about Z: _KEEP + cos φ · _TURN_COS + sin φ · _TURN_SIN.
_KEEP = torch.diag(torch.tensor([1.0, 0.0, 0.0, 1.0], dtype=torch.float64))
_TURN_COS = torch.diag(torch.tensor([0.0, 1.0, 1.0, 0.0], dtype=torch.float64))
_TURN_SIN = torch.tensor(
    [[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]],
    dtype=torch.float64,
)


def _step_ptms(step: Step, angles: torch.Tensor) -> torch.Tensor:
    """``(B, m², m²)`` PTMs of a parameterized step for angles ``(B, num_angles)``."""
    if step.kind == "phase":  # X' = cos φ X − sin φ Y, Y' = sin φ X + cos φ Y
        phi = (angles[:, 0] * step.scale)[:, None, None]
        return _KEEP + torch.cos(phi) * _TURN_COS + torch.sin(phi) * _TURN_SIN
    return torch_ptms(torch_matrices(step.model, angles), step.paulis)


def _apply(x: torch.Tensor, ptm: torch.Tensor, qubits: Sequence[int]) -> torch.Tensor:
    """``x`` through a local PTM, shared ``(m², m²)`` or per row ``(R, m², m²)``."""
    return _apply_const(x, ptm, qubits) if ptm.dim() == 2 else _apply_rows(x, ptm, qubits)


def _parametric_ptms(
    steps: Sequence[Step], angles: torch.Tensor, varies: np.ndarray | None = None
) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    """Angles ``(1 or R, k)`` and PTMs of every parameterized step, by step index: the PTM is
    ``(m², m²)`` when all rows share the step's angles (``varies``: per angle slot, whether the
    rows differ there; by default from ``angles``), else ``(R, m², m²)``. Shared RZ-like steps
    are built all at once."""
    if varies is None:
        varies = (angles != angles[:1]).any(dim=0).numpy()
    local: dict[int, torch.Tensor] = {}
    ptms: dict[int, torch.Tensor] = {}
    phases: list[int] = []
    for i, step in enumerate(steps):
        if step.ptm is not None:
            continue
        slots = list(step.slots)
        local[i] = angles[:, slots] if varies[slots].any() else angles[:1, slots]
        if step.kind == "phase" and local[i].shape[0] == 1:
            phases.append(i)
            continue
        ptm = _step_ptms(step, local[i])
        ptms[i] = ptm[0] if ptm.shape[0] == 1 else ptm
    if phases:
        scale = torch.tensor([steps[i].scale for i in phases], dtype=torch.float64)
        phi = (angles[0, [steps[i].slots[0] for i in phases]] * scale)[:, None, None]
        table = _KEEP + torch.cos(phi) * _TURN_COS + torch.sin(phi) * _TURN_SIN
        ptms.update(zip(phases, table, strict=True))
    return local, ptms


def _ptm_derivatives(step: Step, angles: torch.Tensor) -> torch.Tensor:
    """``(B, num_angles, m², m²)`` d PTM / d angle from the gate model's generators
    G_k = U† dU/da_k: dR_ij = 2 Re Tr(P_i U G_k P_j U†) / m."""
    values = angles.numpy()
    u = torch.as_tensor(step.model.matrices(values), dtype=DTYPE)  # (B, m, m)
    du = u[:, None] @ torch.as_tensor(step.model.generators(values), dtype=DTYPE)
    paulis = step.paulis
    images = du[:, :, None] @ paulis[None, None] @ u.conj().transpose(-1, -2)[:, None, None]
    return 2 * torch.einsum("iab,rkjba->rkij", paulis, images).real / u.shape[-1]


def _pair(costate: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """⟨λ_m, v⟩ for co-states ``(1 or R, M, K)`` and vectors ``(1 or R, K)``: ``(1 or R, M)``."""
    if costate.shape[0] == 1:
        return vectors @ costate[0].T
    return (costate @ vectors[..., None])[..., 0]


def _step_gradients(
    step: Step,
    angles: torch.Tensor,
    before: torch.Tensor,
    after: torch.Tensor,
    costate: torch.Tensor,
) -> list[torch.Tensor]:
    """dF_m/da_k = ⟨λ_m, (dT/da_k) r⟩ for each angle of a parameterized step, each ``(B, M)``:
    ``before``/``after`` are the states around the step, ``costate`` λ = ∂F/∂(state after)."""
    lam = costate.reshape(costate.shape[0], costate.shape[1], -1)
    if step.generator is not None:  # exp(−iaH) gates: dT/da = L · T
        moved = _apply_const(after, step.generator, step.qubits)
        return [_pair(lam, moved.reshape(moved.shape[0], -1))]
    derivatives = _ptm_derivatives(step, angles)  # (B, k, m², m²)
    grads = []
    for k in range(derivatives.shape[1]):
        d = derivatives[:, k]
        moved = (
            _apply_const(before, d[0], step.qubits)
            if d.shape[0] == 1
            else _apply_rows(before, d, step.qubits)
        )
        grads.append(_pair(lam, moved.reshape(moved.shape[0], -1)))
    return grads


def _to_local(x: torch.Tensor, qubits: Sequence[int], n: int) -> torch.Tensor:
    """Vectors ``x (…, 4, …, 4)`` as ``(m², …, K)``: the Pauli digits of ``qubits`` first, all
    leading axes as one (a view, no copy, when ``x`` is the output of a step on ``qubits``)."""
    k = len(qubits)
    t = x.movedim(_local_axes(qubits), list(range(k)))
    return t.reshape(1 << (2 * k), math.prod(x.shape[: x.dim() - n]), -1)


#: The Pauli digits (X, Y) that the derivative of a one-qubit Z rotation touches.
_XY = slice(1, 3)


def _shared_derivatives(
    step: Step, angles: torch.Tensor, costate: torch.Tensor, n: int
) -> list[tuple[torch.Tensor, slice, bool]]:
    """For a step whose angles ``(1, k)`` all rows share, and a shared co-state ``(1, M, …)``:
    per angle, μ_k = (dT/da_k)ᵀ λ in the step's local frame ``(digits, M, K)`` (only the local
    Pauli ``digits`` where it can be non-zero) and whether it pairs with the state after the step
    (``exp``/``phase``: dT/da = L T) or before it, so that dF/da_k = ⟨μ_k, r⟩."""
    if step.generator is not None:
        moved = _apply_const(costate, step.generator.mT, step.qubits)
        digits = _XY if step.kind == "phase" else slice(None)
        return [(_to_local(moved, step.qubits, n)[digits], digits, True)]
    derivatives = _ptm_derivatives(step, angles)[0]  # (k, m², m²)
    return [
        (_to_local(_apply_const(costate, d.mT, step.qubits), step.qubits, n), slice(None), False)
        for d in derivatives
    ]


#: How gradients before ``split`` are computed (:func:`_adjoint`): ``False`` by the reverse sweep
#: of per-row co-states (M per row through every step before ``split``), ``True`` by tangents
#: (forward mode: dr/da_k per row from gate k to ``split``, then ⟨λ, dr/da_k⟩ with the shared
#: co-states λ there), ``None`` whichever moves fewer vectors (:func:`_use_tangents`).
TANGENTS: bool | None = None


def _use_tangents(steps: Sequence[Step], split: int, num_obs: int) -> bool:
    """Tangents cost Σ_k (split − i_k) vector steps over the angles k (at step i_k) before
    ``split``, the reverse sweep M · split: with angle-encoded inputs at the start of the
    circuit (n angles, 2n steps) n² + n against 2nM."""
    if TANGENTS is not None:
        return TANGENTS
    forward = sum(len(steps[i].slots) * (split - i) for i in range(split) if steps[i].ptm is None)
    return forward < num_obs * split


def _step_tangents(
    step: Step, angles: torch.Tensor, before: torch.Tensor, after: torch.Tensor
) -> list[torch.Tensor]:
    """(dT/da_k) r for each angle of a parameterized step: ``before``/``after`` are the states
    around it; each ``(B, 4, …, 4)``."""
    if step.generator is not None:  # exp(−iaH) gates: dT/da = L · T
        return [_apply_const(after, step.generator, step.qubits)]
    derivatives = _ptm_derivatives(step, angles)  # (B, k, m², m²)
    return [
        _apply_const(before, d[0], step.qubits)
        if d.shape[0] == 1
        else _apply_rows(before, d, step.qubits)
        for d in derivatives.unbind(1)
    ]


def _pair_tangents(
    grads: torch.Tensor, costate: torch.Tensor, tangents: list[tuple[int, torch.Tensor]] | None
) -> None:
    """grads[:, :, slot] += ⟨λ_m, t⟩ for the tangents ``(slot, t)`` at the shared co-states λ."""
    if not tangents:
        return
    lam = costate.reshape(1, costate.shape[1], -1)
    for slot, t in tangents:
        grads[:, :, slot] += _pair(lam, t.reshape(t.shape[0], -1))


#: After the split every step is shared by the rows: with gradients, the per-row forward pass
#: there runs consecutive steps fused into blocks of at most two qubits, each parameterized gate's
#: μ_k pulled back to the start of its block (:func:`_fused_tail`); False: step by step.
FUSE_AFTER_SPLIT = True
#: … if the full-size μ vectors of the blocks (one per angle and observable) fit in this many
#: bytes (unfused, only the local Pauli digits a gate touches are kept).
FUSED_BUDGET = 1 << 30


def _fused_tail(
    steps: Sequence[Step],
    split: int,
    matrices: list[torch.Tensor],
    local: dict[int, torch.Tensor],
    weights: torch.Tensor,
    n: int,
) -> list[tuple[tuple[int, ...], torch.Tensor, list[tuple[int, torch.Tensor]]]]:
    """The steps from ``split`` on (all shared) as blocks ``(qubits, PTM, [(slot, μ)])``:
    consecutive steps while their qubits fit in two; μ = (dT_k/da · P)ᵀ λ in the block's local
    frame ``(m², M, K)``, where λ are the observables' co-states after gate k and P the block's
    steps before it (and gate k itself for ``exp(−iaH)`` gates, dT/da = L · T), so that
    dF/da_k = ⟨μ, r⟩ with r the state at the start of the block."""
    groups: list[tuple[tuple[int, ...], list[int]]] = []
    for i in range(split, len(steps)):
        if groups and len(set(groups[-1][0]) | set(steps[i].qubits)) <= MAX_FUSED_QUBITS:
            groups[-1] = (tuple(sorted(set(groups[-1][0]) | set(steps[i].qubits))), groups[-1][1])
            groups[-1][1].append(i)
        else:
            groups.append((tuple(sorted(steps[i].qubits)), [i]))
    block_of = {i: g for g, (_, members) in enumerate(groups) for i in members}
    mus: list[list[tuple[int, torch.Tensor]]] = [[] for _ in groups]
    costate = weights.reshape((1, weights.shape[0]) + (4,) * n)
    for i in range(len(steps) - 1, split - 1, -1):
        step = steps[i]
        if step.ptm is None:
            qubits, members = groups[block_of[i]]
            if step.generator is not None:
                moved = [(_apply_const(costate, step.generator.mT, step.qubits), True)]
            else:
                derivatives = _ptm_derivatives(step, local[i])[0]  # (k, m², m²)
                moved = [(_apply_const(costate, d.mT, step.qubits), False) for d in derivatives]
            for slot, (mu, with_after) in zip(step.slots, moved, strict=True):
                for j in reversed(members[: members.index(i) + int(with_after)]):
                    mu = _apply_const(mu, matrices[j].mT, steps[j].qubits)
                mus[block_of[i]].append((slot, _to_local(mu, qubits, n)))
        costate = _apply_const(costate, matrices[i].mT, step.qubits)
    blocks = []
    for g, (qubits, members) in enumerate(groups):
        ptm = np.eye(4 ** len(qubits))
        for j in members:
            ptm = embed_ptm(matrices[j].numpy(), steps[j].qubits, qubits) @ ptm
        blocks.append((qubits, torch.as_tensor(ptm), mus[g]))
    return blocks


def _pair_and_apply(
    x: torch.Tensor,
    ptm: torch.Tensor,
    qubits: tuple[int, ...],
    mus: list[tuple[int, torch.Tensor]],
    grads: torch.Tensor,
) -> torch.Tensor:
    """grads[:, :, slot] += ⟨μ, x⟩ for the block's ``mus``, then ``x`` through the block's
    PTM: one local copy of ``x`` for both."""
    axes, front = _local_axes(qubits), list(range(len(qubits)))
    t = x.movedim(axes, front)
    shape = t.shape
    flat = t.reshape(ptm.shape[1], -1)
    if mus:
        r = flat.reshape(ptm.shape[1], shape[len(qubits)], -1)  # (m², B, K)
        for slot, mu in mus:
            grads[:, :, slot] += torch.bmm(r, mu.mT).sum(0)  # Σ over the local digits
    return (ptm @ flat).reshape(shape).movedim(front, axes)


def _adjoint(
    noisy: NoisyProgram,
    angles: torch.Tensor,
    weights: torch.Tensor,
    gradient: bool,
    varies: np.ndarray | None = None,
    tail: dict | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Values ``(R, M)`` and, with ``gradient``, d values / d angles ``(R, M, S)``.

    Vectors are shared (batch 1) while every row has the same history: the state up to the first
    gate whose angles differ between rows, the co-states λ of the observables back from the end
    to the last such gate (``split``). So:

    1. the observables go backwards from the end to ``split`` (shared, cheap); with gradients,
       each parameterized gate there leaves μ_k = (dT/da_k)ᵀ λ;
    2. the state goes forwards; after ``split`` (gradients only) every parameterized gate's
       gradient is ⟨μ_k, r⟩, one small GEMM, and no per-row state is kept;
    3. values: ⟨λ, r⟩ at ``split``; gradients before ``split``: a reverse sweep of the per-row
       co-states through the states kept there.

    Values alone with at least as many observables as rows go forwards to the end instead.

    Chunks of one batch pass the batch's ``varies`` (:func:`_parametric_ptms`) and one ``tail``
    dict: step 1 depends only on the shared angles and the observables, so the first chunk
    leaves its result there and the others reuse it.
    """
    n, rows, num_obs = noisy.num_qubits, angles.shape[0], weights.shape[0]
    grads = torch.zeros((rows, num_obs, angles.shape[1]), dtype=torch.float64)
    if num_obs == 0:
        return torch.zeros((rows, 0), dtype=torch.float64), grads if gradient else None
    steps = noisy.steps
    local, ptms = _parametric_ptms(steps, angles, varies)
    matrices = [step.ptm if step.ptm is not None else ptms[i] for i, step in enumerate(steps)]
    if varies is None:
        last = max((i for i, a in local.items() if a.shape[0] > 1), default=-1)
    else:  # the batch's split, also in a chunk of one row
        last = max((i for i in local if varies[list(steps[i].slots)].any()), default=-1)
    total = rows if tail is None else tail.setdefault("rows", rows)
    split = last + 1 if gradient or num_obs < total else len(steps)
    if tail is not None and "costate" in tail:
        costate, pending = tail["costate"], tail["pending"]
    else:
        costate = weights.reshape((1, num_obs) + (4,) * n)
        pending: dict[int, list[tuple[torch.Tensor, slice, bool]]] = {}
        for i in range(len(steps) - 1, split - 1, -1):
            step = steps[i]
            if gradient and step.ptm is None:
                pending[i] = _shared_derivatives(step, local[i], costate, n)
            costate = _apply_const(costate, matrices[i].mT, step.qubits)
        if tail is not None:
            tail.update(costate=costate, pending=pending)
    blocks = None
    after = sum(len(steps[i].slots) for i in range(split, len(steps)) if steps[i].ptm is None)
    fused_bytes = after * num_obs * 8 << (2 * n)  # the μ vectors that the blocks keep
    if gradient and FUSE_AFTER_SPLIT and split < len(steps) and fused_bytes <= FUSED_BUDGET:
        blocks = tail.get("blocks") if tail is not None else None
        if blocks is None:
            blocks = _fused_tail(steps, split, matrices, local, weights, n)
            if tail is not None:
                tail["blocks"] = blocks
    state = initial_state(1, n)
    saved: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    tangents: list[tuple[int, torch.Tensor]] | None = None
    if gradient and _use_tangents(steps, split, num_obs):
        tangents = []
    values = None
    for i, step in enumerate(steps):
        if i == split:
            values = _pair(costate.reshape(1, num_obs, -1), state.reshape(state.shape[0], -1))
            _pair_tangents(grads, costate, tangents)
            if not gradient or blocks is not None:
                break
        if tangents and i < split:
            tangents = [(slot, _apply(t, matrices[i], step.qubits)) for slot, t in tangents]
        before, state = state, _apply(state, matrices[i], step.qubits)
        if not gradient or step.ptm is not None:
            continue
        if i < split:
            if tangents is None:
                saved[i] = (before, state)
            else:
                derivatives = _step_tangents(step, local[i], before, state)
                tangents.extend(zip(step.slots, derivatives, strict=True))
            continue
        for slot, (mu, digits, with_after) in zip(step.slots, pending[i], strict=True):
            r = _to_local(state if with_after else before, step.qubits, n)[digits]
            grads[:, :, slot] += torch.bmm(r, mu.mT).sum(0)  # Σ over the local digits
    if values is None:  # split == len(steps)
        values = _pair(costate.reshape(1, num_obs, -1), state.reshape(state.shape[0], -1))
        _pair_tangents(grads, costate, tangents)
    values = values.expand(rows, num_obs)
    for qubits, ptm, mus in blocks or ():  # after the split, fused (:func:`_fused_tail`)
        state = _pair_and_apply(state, ptm, qubits, mus, grads)
    if not gradient or tangents is not None:
        return values, grads if gradient else None
    for i in range(split - 1, -1, -1):  # per-row co-states through the kept states
        step = steps[i]
        if step.ptm is None:
            before, after = saved.pop(i)
            derivatives = _step_gradients(step, local[i], before, after, costate)
            for slot, grad in zip(step.slots, derivatives, strict=True):
                grads[:, :, slot] += grad
        if i:
            costate = _apply(costate, matrices[i].mT, step.qubits)
    return values, grads


# -- one row: NumPy -------------------------------------------------------------------------------
# With a single parameter row (batch 1, or a batch whose rows are all equal) every vector is small
# and the torch path is dominated by its per-op dispatch; this path does the same adjoint sweep in
# NumPy with everything that depends only on the program precomputed once (:func:`_shared_plan`).
# A vector is an ndarray with one axis of 4 per qubit (plus a trailing observable axis for
# co-states) in a tracked qubit ``order``: applying a step puts its qubits' axes first (one
# transpose-copy and one GEMM) and the next step's permutation is known in advance.


@dataclass(frozen=True, eq=False)
class _SharedPlan:
    forward: tuple[tuple[int, ...], ...]  # per step: permutation of the state's axes before it
    backward: tuple[tuple[int, ...], ...]  # per step: of the co-state's axes (observables last)
    final: tuple[int, ...]  # state axes → canonical order after the last step
    pair_state: dict  # parameterized step → axes of the state before it: (local, rest)
    pair_costate: dict  # … of the co-state after it: (observables, local, rest)
    const: tuple  # per step: (PTM, PTMᵀ) as NumPy, or None for parameterized steps
    groups: tuple  # (model, step indices, their angle slots) of the parameterized steps
    bases: dict  # local qubit count k → (T, Tᴴ): columns of T are the vectorized Paulis


def _shared_plan(noisy: NoisyProgram) -> _SharedPlan:
    plan = noisy.plans.get("shared")
    if plan is not None:
        return plan
    n, steps = noisy.num_qubits, noisy.steps
    canonical = list(range(n - 1, -1, -1))  # axis j is qubit n − 1 − j (flat index Σ p_q 4^q)

    def perm(order: list[int], lead: list[int], rest: list[int]) -> tuple[int, ...]:
        return tuple(order.index(q) for q in lead + rest)

    forward, orders_before = [], []
    order = canonical
    for step in steps:
        lead = list(reversed(step.qubits))  # most significant local digit first
        others = [q for q in order if q not in lead]
        forward.append(perm(order, lead, others))
        orders_before.append(order)
        order = lead + others
    final = perm(order, canonical, [])
    backward: list[tuple[int, ...]] = [()] * len(steps)
    orders_after: list[list[int]] = [[]] * len(steps)
    order = canonical
    for i in range(len(steps) - 1, -1, -1):
        lead = list(reversed(steps[i].qubits))
        others = [q for q in order if q not in lead]
        backward[i] = perm(order, lead, others) + (n,)
        orders_after[i] = order
        order = lead + others
    pair_state, pair_costate, groups, bases = {}, {}, {}, {}
    const = []
    for i, step in enumerate(steps):
        if step.ptm is not None:
            ptm = step.ptm.numpy()
            const.append((ptm, np.ascontiguousarray(ptm.T)))
            continue
        const.append(None)
        lead = list(reversed(step.qubits))
        rest = [q for q in canonical if q not in lead]
        pair_state[i] = perm(orders_before[i], lead, rest)
        pair_costate[i] = (n,) + perm(orders_after[i], lead, rest)
        groups.setdefault(id(step.model), (step.model, []))[1].append(i)
        k = len(step.qubits)
        if k not in bases:
            t = pauli_matrices(k).reshape(4**k, 4**k).T.copy()
            bases[k] = (t, t.conj().T.copy())
    plan = _SharedPlan(
        tuple(forward),
        tuple(backward),
        final,
        pair_state,
        pair_costate,
        tuple(const),
        tuple(
            (model, tuple(members), np.array([steps[i].slots for i in members], dtype=np.intp))
            for model, members in groups.values()
        ),
        bases,
    )
    noisy.plans["shared"] = plan
    return plan


def _shared_ptms(
    noisy: NoisyProgram, plan: _SharedPlan, angles: np.ndarray, gradient: bool
) -> tuple[dict[int, np.ndarray], dict[int, tuple[np.ndarray, np.ndarray]]]:
    """PTMs ``(m², m²)`` of the parameterized steps for one row of angles ``(S,)`` and, with
    ``gradient``, their derivatives, flattened ``(m⁴, k)``, with the step's angle slots:
    R = Re(Tᴴ (U ⊗ Ū) T) / m and dR/da_j = 2 Re(Tᴴ (U G_j ⊗ Ū) T) / m, one batch per gate
    model."""
    steps = noisy.steps
    ptms: dict[int, np.ndarray] = {}
    derivatives: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for model, members, slots in plan.groups:
        a = angles[slots]  # (G, k)
        u = model.matrices(a)  # (G, m, m)
        g, m = u.shape[0], u.shape[-1]
        t, th = plan.bases[len(steps[members[0]].qubits)]
        uc = u.conj()
        kron = (u[:, :, None, :, None] * uc[:, None, :, None, :]).reshape(g, m * m, m * m)
        r = (th @ kron @ t).real / m
        ptms.update(zip(members, r, strict=True))
        if gradient:
            du = u[:, None] @ model.generators(a)  # (G, k, m, m)
            dk = du[:, :, :, None, :, None] * uc[:, None, None, :, None, :]
            dr = 2 * (th @ dk.reshape(g, -1, m * m, m * m) @ t).real / m
            flat = dr.reshape(g, dr.shape[1], -1).transpose(0, 2, 1)  # (G, m⁴, k)
            derivatives.update(zip(members, zip(flat, slots, strict=True), strict=True))
    return ptms, derivatives


def _np_apply(x: np.ndarray, ptm: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """``ptm`` on the first local axes of ``x`` after permuting them to ``axes``: the result
    has the step's qubits first (the layout the plan expects next)."""
    t = x.transpose(axes)
    shape = t.shape
    return (ptm @ t.reshape(ptm.shape[1], -1)).reshape(shape)


def _adjoint_shared(
    noisy: NoisyProgram, angles: np.ndarray, weights: np.ndarray, gradient: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`_adjoint` for ONE row of angles ``(S,)`` in NumPy: values ``(M,)`` and, with
    ``gradient``, d values / d angles ``(M, S)``. Forward pass keeping the states before the
    parameterized steps, then one reverse sweep of the co-states of all observables, where
    dF_m/da_k = Σ_ab dR_k[a, b] C_m[a, b] with C_m = Σ_rest λ_m[a, rest] r[b, rest]."""
    plan = _shared_plan(noisy)
    n, steps = noisy.num_qubits, noisy.steps
    num_obs = weights.shape[0]
    if num_obs == 0:
        return np.zeros(0), np.zeros((0, angles.shape[0])) if gradient else None
    ptms, derivatives = _shared_ptms(noisy, plan, angles, gradient)
    state = np.zeros((4,) * n)
    state[(slice(None, None, 3),) * n] = 1.0  # |0…0⟩: r_P = 1 for P ∈ {I, Z}^n
    kept: dict[int, np.ndarray] = {}
    for i, c in enumerate(plan.const):
        if c is None:
            if gradient:
                kept[i] = state
            state = _np_apply(state, ptms[i], plan.forward[i])
        else:
            state = _np_apply(state, c[0], plan.forward[i])
    values = weights @ state.transpose(plan.final).reshape(-1)
    if not gradient:
        return values, None
    grads = np.zeros((num_obs, angles.shape[0]))
    costate = weights.T.reshape((4,) * n + (num_obs,))
    for i in range(len(steps) - 1, -1, -1):
        c = plan.const[i]
        if c is None:
            m2 = ptms[i].shape[0]
            lam = costate.transpose(plan.pair_costate[i]).reshape(num_obs, m2, -1)
            r = kept.pop(i).transpose(plan.pair_state[i]).reshape(m2, -1)
            outer = (lam @ r.T).reshape(num_obs, -1)  # C_m, (M, m⁴)
            d, slots = derivatives[i]
            grads[:, slots] += outer @ d
            if i:
                costate = _np_apply(costate, ptms[i].T, plan.backward[i])
        elif i:
            costate = _np_apply(costate, c[1], plan.backward[i])
    return values, grads


def apply_ptm(r: torch.Tensor, ptm: torch.Tensor, qubits: Sequence[int], n: int) -> torch.Tensor:
    """Pauli vectors ``r (R, 4, …, 4)`` (axis 1 + n − 1 − q is qubit q) through a local PTM,
    constant ``(m², m²)`` or per row ``(R, m², m²)``, on ``qubits``."""
    if ptm.dim() == 2:
        return _apply_const(r, ptm, qubits)
    return _apply_rows(r, ptm, qubits)


def initial_state(rows: int, n: int) -> torch.Tensor:
    """|0…0⟩ as Pauli vectors ``(rows, 4, …, 4)``: r_P = 1 for P ∈ {I, Z}^n, else 0."""
    zero = torch.tensor([1.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    state = torch.ones((), dtype=torch.float64)
    for _ in range(n):
        state = state[..., None] * zero
    return state.expand((rows,) + (4,) * n)


def evolve(noisy: NoisyProgram, angles: torch.Tensor) -> torch.Tensor:
    """Final Pauli vectors r_P = Tr(P ρ), ``(R, 4ⁿ)``, for gate angles ``(R, S)``: the plain,
    differentiable forward pass (every parameterized PTM built per row through autograd-able
    torch ops); :func:`simulate` uses the faster :func:`_adjoint` instead."""
    n = noisy.num_qubits
    r = initial_state(angles.shape[0], n)
    for step in noisy.steps:
        if step.ptm is not None:
            r = apply_ptm(r, step.ptm, step.qubits, n)
            continue
        unitaries = torch_matrices(step.model, angles[:, list(step.slots)])
        r = apply_ptm(r, torch_ptms(unitaries, step.paulis), step.qubits, n)
    return r.reshape(angles.shape[0], -1)


#: Pauli digit (I 0, X 1, Y 2, Z 3) of a ``SparseObservable.BitTerm`` value (X 2, Y 3, Z 1).
_BIT_TERM_DIGIT = np.array([0, 3, 1, 2])
#: Pauli digit of a symplectic (x, z) bit pair: I (0, 0), X (1, 0), Y (1, 1), Z (0, 1).
_XZ_DIGIT = np.array([[0, 3], [1, 2]])


def _observable_row(obs, num_qubits: int) -> np.ndarray:
    """Pauli weights of one Hermitian observable (``SparseObservable`` or ``SparsePauliOp``)."""
    if obs.num_qubits != num_qubits:
        raise BackendError(f"observable on {obs.num_qubits} qubits, circuit has {num_qubits}")
    row = np.zeros(4**num_qubits)
    if isinstance(obs, SparseObservable):
        bits = np.asarray(obs.bit_terms, dtype=np.int64)
        if bits.size == 0 or bits.max() <= 3:  # Pauli terms only (no projectors)
            coeffs = np.asarray(obs.coeffs)
            if np.abs(coeffs.imag).max(initial=0.0) > 1e-12:
                raise BackendError("observable has a complex coefficient")
            terms = np.repeat(
                np.arange(coeffs.size), np.diff(np.asarray(obs.boundaries, dtype=np.int64))
            )
            index = np.zeros(coeffs.size, dtype=np.int64)
            np.add.at(
                index, terms, _BIT_TERM_DIGIT[bits] << (2 * np.asarray(obs.indices, dtype=np.int64))
            )
            np.add.at(row, index, coeffs.real)
            return row
        obs = SparsePauliOp.from_sparse_observable(obs)
    paulis, coeffs = obs.paulis, np.asarray(obs.coeffs)
    if not np.any(paulis.phase) and np.abs(coeffs.imag).max(initial=0.0) <= 1e-12:
        digits = _XZ_DIGIT[paulis.x.astype(np.int64), paulis.z.astype(np.int64)]  # (T, n)
        index = (digits << (2 * np.arange(num_qubits, dtype=np.int64))).sum(axis=1)
        np.add.at(row, index, coeffs.real)
        return row
    for label, coeff in zip(obs.paulis.to_labels(), obs.coeffs, strict=True):
        if abs(coeff.imag) > 1e-12:
            raise BackendError(f"observable term {label} has a complex coefficient {coeff}")
        index = sum(_PAULI_INDEX[c] << (2 * q) for q, c in enumerate(reversed(label)))
        row[index] += coeff.real
    return row


def _observable_key(obs) -> tuple | None:
    """The content of a ``SparseObservable`` or ``SparsePauliOp`` as a hashable key (None for
    anything else): equal keys mean equal observables, so the rows cached under them stay right
    when an observable object is edited in place or a new one is made."""
    if isinstance(obs, SparseObservable):
        kind, parts = "sparse", (obs.coeffs, obs.bit_terms, obs.indices, obs.boundaries)
    elif isinstance(obs, SparsePauliOp):
        paulis = obs.paulis
        kind, parts = "pauli", (obs.coeffs, paulis.x, paulis.z, paulis.phase)
    else:
        return None
    arrays = [np.asarray(p) for p in parts]
    if any(a.dtype == object for a in arrays):  # e.g. parameterized coefficients
        return None
    return (kind, obs.num_qubits) + tuple(a.tobytes() for a in arrays)


#: Pauli weights of recent observables by content (:func:`_observable_key`); cleared when full.
_ROWS: dict[tuple, np.ndarray] = {}
_ROWS_LIMIT = 4096


def _cached_row(obs, num_qubits: int) -> np.ndarray:
    key = _observable_key(obs)
    if key is None or key[1] != num_qubits:  # not cacheable, or the width error to raise
        return _observable_row(obs, num_qubits)
    row = _ROWS.get(key)
    if row is None:
        row = _observable_row(obs, num_qubits)
        row.setflags(write=False)
        if len(_ROWS) >= _ROWS_LIMIT:
            _ROWS.clear()
        _ROWS[key] = row
    return row


def pauli_weights(observables: Iterable, num_qubits: int) -> torch.Tensor:
    """``(M, 4ⁿ)`` real weights w with ⟨O_m⟩ = Σ_P w[m, P] r_P (Hermitian observables only)."""
    rows = [_cached_row(obs, num_qubits) for obs in observables]
    weights = np.stack(rows) if rows else np.zeros((0, 4**num_qubits))
    return torch.as_tensor(weights, dtype=torch.float64)


def _chunk_rows(
    noisy: NoisyProgram, num_obs: int, gradient: bool, varies: np.ndarray | None = None
) -> int:
    """Rows per chunk so that the kept states (two per parameterized gate up to the last one
    whose angles differ between rows, ``varies`` per angle slot; all of them if not given) and
    the per-row co-states of a chunk stay within :data:`MEMORY_BUDGET`."""
    vectors = 4
    if gradient:
        parametric = [i for i, step in enumerate(noisy.steps) if step.ptm is None]
        if varies is not None:
            last = max(
                (i for i in parametric if varies[list(noisy.steps[i].slots)].any()), default=-1
            )
            parametric = [i for i in parametric if i <= last]
        vectors += 2 * len(parametric) + 3 * num_obs
    return max(1, MEMORY_BUDGET // (vectors * 8 << (2 * noisy.num_qubits)))


def simulate(
    noisy: NoisyProgram, values: np.ndarray, weights: torch.Tensor, gradient: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """Values ``(R, M)`` and, with ``gradient``, d values / d parameters ``(R, M, P)``.

    Gradients by the adjoint method (:func:`_adjoint`): one forward pass and one reverse sweep
    for all observables, pulled back to the circuit parameters by the program's angle map.
    """
    angle_map = noisy.program.angle_map
    rows = values.shape[0]
    num_obs = weights.shape[0]
    out = np.empty((rows, num_obs))
    grads = np.empty((rows, num_obs, values.shape[1])) if gradient else None
    if rows == 1:  # one row: the NumPy path (no per-op torch dispatch)
        angles = angle_map.evaluate(values)
        f, angle_grads = _adjoint_shared(noisy, angles[0], weights.numpy(), gradient)
        out[0] = f
        if gradient:
            grads[:] = angle_map.pullback(values, angle_grads[None])
        return out, grads
    all_angles = angle_map.evaluate(values)
    varies = (all_angles != all_angles[:1]).any(axis=0)
    chunk = _chunk_rows(noisy, num_obs, gradient, varies)
    tail: dict = {}  # the shared backward sweep, computed by the first chunk
    with torch.no_grad():
        for start in range(0, rows, chunk):
            part = values[start : start + chunk]
            angles = torch.as_tensor(all_angles[start : start + chunk], dtype=torch.float64)
            f, angle_grads = _adjoint(noisy, angles, weights, gradient, varies, tail)
            out[start : start + chunk] = f.numpy()
            if gradient:
                grads[start : start + chunk] = angle_map.pullback(part, angle_grads.numpy())
    return out, grads


def _simulate_autograd(
    noisy: NoisyProgram, values: np.ndarray, weights: torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """Reference for tests: values and gradients by torch autograd through :func:`evolve` (the
    batched vector–Jacobian products of all observables at once; slower than the adjoint)."""
    angles = torch.as_tensor(noisy.program.angle_map.evaluate(values), dtype=torch.float64)
    angles.requires_grad_(True)
    f = evolve(noisy, angles) @ weights.T  # (R, M)
    num_obs = weights.shape[0]
    eye = torch.eye(num_obs, dtype=f.dtype)[:, None, :].expand(num_obs, f.shape[0], num_obs)
    (angle_grads,) = torch.autograd.grad(f, angles, grad_outputs=eye, is_grads_batched=True)
    per_angle = angle_grads.permute(1, 0, 2).numpy()  # (R, M, S)
    return f.detach().numpy(), noisy.program.angle_map.pullback(values, per_angle)


# -- primitives -----------------------------------------------------------------------------------
class DensityMatrixEstimator(BaseEstimatorV2):
    """Exact noisy expectation values (``BaseEstimatorV2``) by the torch density-matrix engine.

    A precision p > 0 adds ``N(0, p)`` noise like Aer's ``EstimatorV2`` (use
    :class:`~qhqcnn.noise.sampling.ShotEstimator` for shot sampling). PUBs that share a circuit
    and parameter values (``EstimatorQNN`` sends one per observable) are simulated once.
    """

    def __init__(
        self,
        noise_model: NoiseModel | None = None,
        *,
        default_precision: float = 0.0,
        seed: int | None = None,
        device: str = "cpu",
    ) -> None:
        if device != "cpu":
            raise BackendError("the density-matrix engine runs on the CPU only")
        self.noise_model = noise_model
        self.default_precision = default_precision
        self._rng = np.random.default_rng(seed)

    @property
    def options(self) -> Options:
        return Options(default_precision=self.default_precision)

    def program(self, circuit: QuantumCircuit) -> NoisyProgram:
        return _CACHE.get(circuit, self.noise_model)

    def run(self, pubs: Iterable[EstimatorPubLike], *, precision: float | None = None) -> InlineJob:
        precision = self.default_precision if precision is None else precision
        coerced = coerce_pubs(pubs, precision)
        job = InlineJob(self._run, coerced)
        job._submit()
        return job

    def _run(self, pubs: list[EstimatorPub]) -> PrimitiveResult[PubResult]:
        results: list[PubResult | None] = [None] * len(pubs)
        groups: dict[tuple, list[int]] = {}
        tables = []
        programs: dict[int, NoisyProgram] = {}  # one cache look-up per distinct circuit
        for i, pub in enumerate(pubs):
            noisy = programs.get(id(pub.circuit))
            if noisy is None:
                noisy = programs[id(pub.circuit)] = self.program(pub.circuit)
            table = parameter_table(pub, noisy.program)
            tables.append((noisy, table))
            groups.setdefault((id(noisy), table.shape, table.tobytes()), []).append(i)
        for members in groups.values():
            noisy, table = tables[members[0]]
            rows, inverse = unique_rows(table)
            obs_list = []
            for i in members:
                obs_list.extend(np.asarray(pubs[i].observables.sparse_observables_array()).ravel())
            values, _ = simulate(noisy, rows, pauli_weights(obs_list, noisy.num_qubits))
            offset = 0
            for i in members:
                pub = pubs[i]
                count = pub.observables.size
                value_index = np.broadcast_to(
                    inverse.reshape(pub.parameter_values.shape), pub.shape
                )
                obs_index = np.broadcast_to(
                    offset + np.arange(count).reshape(pub.observables.shape), pub.shape
                )
                offset += count
                evs = values[value_index, obs_index]
                if pub.precision:
                    evs = self._rng.normal(evs, pub.precision)
                results[i] = PubResult(
                    DataBin(evs=evs, stds=np.full(pub.shape, pub.precision), shape=pub.shape),
                    metadata={"target_precision": pub.precision},
                )
        return PrimitiveResult(results, metadata={"version": 2})


class DensityMatrixGradient(InlineGradient):
    """Exact gradients of noisy expectation values by the density engine's adjoint sweep
    (inline, validated once per distinct object: :class:`~qhqcnn.engine.gradient.InlineGradient`);
    results, order and metadata follow qiskit-machine-learning's gradients."""

    def __init__(self, estimator: DensityMatrixEstimator, options: Options | None = None) -> None:
        if not isinstance(estimator, DensityMatrixEstimator):
            raise BackendError("DensityMatrixGradient needs a DensityMatrixEstimator")
        super().__init__(estimator, options=options)

    def _run(
        self,
        circuits: Sequence[QuantumCircuit],
        observables: Sequence[BaseOperator],
        parameter_values: Sequence[Sequence[float]] | np.ndarray,
        parameters: Sequence[Sequence[Parameter] | None],
        **options,
    ) -> EstimatorGradientResult:
        gradients: list[np.ndarray | None] = [None] * len(circuits)
        metadata: list[dict | None] = [None] * len(circuits)
        distinct, circuit_of = index_by_identity(circuits)
        for k, circuit in enumerate(distinct):
            members = np.flatnonzero(circuit_of == k)
            noisy = self._estimator.program(circuit)
            rows, row_of = unique_rows(gradient_rows(parameter_values, members))
            obs_list, obs_of = index_by_identity([observables[i] for i in members])
            weights = pauli_weights(obs_list, noisy.num_qubits)
            _, grads = simulate(noisy, rows, weights, gradient=True)
            full = grads[row_of, obs_of]  # (members, P) in circuit.parameters order
            everything = circuit.parameters
            position = {p: j for j, p in enumerate(everything)}
            choices, choice_of = index_by_identity([parameters[i] for i in members])
            columns = [None if c is None else [position[p] for p in c] for c in choices]
            chosen = [everything if c is None else c for c in choices]
            for local, (i, c) in enumerate(zip(members.tolist(), choice_of.tolist(), strict=True)):
                cols = columns[c]
                gradients[i] = full[local] if cols is None else full[local, cols]
                metadata[i] = {"parameters": chosen[c]}
        return EstimatorGradientResult(
            gradients=gradients, metadata=metadata, options=Options(**options)
        )
