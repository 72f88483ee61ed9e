"""Vectorized density-matrix simulation in torch: exact noisy values and autograd gradients.

The unitary part comes from the exact engine's compiled :class:`~qhqcnn.engine.Program` (gate
models, qubits, the affine parameter → angle map); the noise from the (re-indexed) Aer noise model,
with Aer's rules: after every instruction, the local error of ``(name, qubits)`` if the model has
one, else the all-qubit error of ``name``; error terms of probability ≤ 1e-10 dropped, as Aer does.

States are density matrices in the Pauli (Liouville) representation: the real vector
r_P = Tr(P ρ) over the 4ⁿ Pauli strings, stored as an ``(R, 4, …, 4)`` tensor for a batch of R
parameter rows. Gates and channels are real Pauli transfer matrices on their qubits (constant gates
fused with their noise, and with each other when consecutive on the same qubits), so evolution is
one small real GEMM per step and ⟨P⟩ is read off r directly.

Readout errors are NOT applied, exactly like Aer's ``EstimatorV2`` (``save_expectation_value``
measures nothing); ``AerBackend(readout=True)`` folds them into the observables instead.
Gradients: torch autograd of all observables with respect to all gate angles of the batch at once
(``is_grads_batched``), pulled back to the circuit parameters by the program's angle map.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from qiskit.circuit import Parameter, QuantumCircuit
from qiskit.primitives import BaseEstimatorV2
from qiskit.primitives.containers import DataBin, EstimatorPubLike, PrimitiveResult, PubResult
from qiskit.primitives.containers.estimator_pub import EstimatorPub
from qiskit.providers import Options
from qiskit.quantum_info import SparsePauliOp, SuperOp
from qiskit_aer.noise import NoiseModel
from qiskit_machine_learning.gradients import BaseEstimatorGradient, EstimatorGradientResult

from qhqcnn.engine import ControlledGate, ExponentialGate, FixedGate, UGate, compile_circuit
from qhqcnn.engine.batching import index_by_identity, unique_rows
from qhqcnn.engine.compile import IGNORED
from qhqcnn.engine.estimator import parameter_table
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
    local = model._local_quantum_errors.get(name, {}).get(qubits)
    return local if local is not None else model._default_quantum_errors.get(name)


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
@dataclass(eq=False)
class Step:
    """A constant PTM (gate and its noise, fused), or a parameterized gate and its noise PTM."""

    qubits: tuple[int, ...]
    ptm: torch.Tensor | None = None  # constant (m², m²)
    model: object = None
    slots: tuple[int, ...] = ()
    noise: torch.Tensor | None = None  # applied after a parameterized gate
    paulis: torch.Tensor | None = None  # (m², m, m) complex, for parameterized gates


@dataclass(frozen=True, eq=False)
class NoisyProgram:
    """A compiled program with Aer's errors attached, as Pauli-transfer steps."""

    program: Program
    steps: tuple[Step, ...]

    @property
    def num_qubits(self) -> int:
        return self.program.num_qubits


def build_noisy_program(circuit: QuantumCircuit, model: NoiseModel | None) -> NoisyProgram:
    """Compile ``circuit`` with the engine and attach the errors of ``model`` to its ops.

    Consecutive constant steps on the same qubits are multiplied into one.
    """
    program = compile_circuit(circuit)
    noisy = model is not None and not model.is_ideal()
    keys = _instruction_keys(circuit) if noisy else [None] * len(program.ops)
    if len(keys) != len(program.ops):
        raise BackendError("compiled program and circuit instructions do not align")
    steps: list[Step] = []
    noise_ptms: dict[int, np.ndarray] = {}
    pauli_tensors: dict[int, torch.Tensor] = {}
    for op, key in zip(program.ops, keys, strict=True):
        error = instruction_error(model, *key) if key is not None else None
        if error is not None and id(error) not in noise_ptms:
            noise_ptms[id(error)] = ptm_of_superop(superop(error))
        noise = noise_ptms[id(error)] if error is not None else None
        if op.is_fixed:
            ptm = ptm_of_unitary(op.model.matrix)
            if noise is not None:
                ptm = noise @ ptm
            last = steps[-1] if steps else None
            if last is not None and last.ptm is not None and last.qubits == op.qubits:
                last.ptm = torch.as_tensor(ptm) @ last.ptm
            else:
                steps.append(Step(op.qubits, ptm=torch.as_tensor(ptm)))
            continue
        k = len(op.qubits)
        if k not in pauli_tensors:
            pauli_tensors[k] = torch.as_tensor(pauli_matrices(k), dtype=DTYPE)
        steps.append(
            Step(
                op.qubits,
                model=op.model,
                slots=op.slots,
                noise=None if noise is None else torch.as_tensor(noise),
                paulis=pauli_tensors[k],
            )
        )
    return NoisyProgram(program, tuple(steps))


class _ProgramCache:
    """Noisy programs keyed by (circuit, noise model) identity, dropped with the circuit."""

    def __init__(self) -> None:
        self._entries: dict[tuple[int, int], tuple[weakref.ref, NoisyProgram]] = {}
        self._lock = threading.Lock()

    def get(self, circuit: QuantumCircuit, model: NoiseModel | None) -> NoisyProgram:
        key = (id(circuit), id(model))
        with self._lock:
            entry = self._entries.get(key)
        program = compile_circuit(circuit)
        if entry is not None and entry[0]() is circuit and entry[1].program is program:
            return entry[1]
        noisy = build_noisy_program(circuit, model)
        with self._lock:
            ref = weakref.ref(circuit, lambda _, k=key: self._entries.pop(k, None))
            self._entries[key] = (ref, noisy)
        return noisy


_CACHE = _ProgramCache()


# -- evolution ------------------------------------------------------------------------------------
def apply_ptm(r: torch.Tensor, ptm: torch.Tensor, qubits: Sequence[int], n: int) -> torch.Tensor:
    """Pauli vectors ``r (R, 4, …, 4)`` (axis 1 + n − 1 − q is qubit q) through a local PTM,
    constant ``(m², m²)`` or per row ``(R, m², m²)``, on ``qubits``."""
    k = len(qubits)
    axes = [n - q for q in reversed(qubits)]  # most significant local digit first
    if ptm.dim() == 2:  # one GEMM over the whole batch
        front = list(range(k))
        t = r.movedim(axes, front)
        shape = t.shape
        out = (ptm @ t.reshape(1 << (2 * k), -1)).reshape(shape)
        return out.movedim(front, axes)
    front = list(range(1, k + 1))
    t = r.movedim(axes, front)
    shape = t.shape
    out = torch.bmm(ptm, t.reshape(r.shape[0], 1 << (2 * k), -1)).reshape(shape)
    return out.movedim(front, axes)


def initial_state(rows: int, n: int) -> torch.Tensor:
    """|0…0⟩ as Pauli vectors ``(rows, 4, …, 4)``: r_P = 1 for P ∈ {I, Z}^n, else 0."""
    zero = torch.tensor([1.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    state = torch.ones((), dtype=torch.float64)
    for _ in range(n):
        state = state[..., None] * zero
    return state.expand((rows,) + (4,) * n)


def evolve(noisy: NoisyProgram, angles: torch.Tensor) -> torch.Tensor:
    """Final Pauli vectors r_P = Tr(P ρ), ``(R, 4ⁿ)``, for gate angles ``(R, S)``."""
    n = noisy.num_qubits
    r = initial_state(angles.shape[0], n)
    for step in noisy.steps:
        if step.ptm is not None:
            r = apply_ptm(r, step.ptm, step.qubits, n)
            continue
        unitaries = torch_matrices(step.model, angles[:, list(step.slots)])
        ptm = torch_ptms(unitaries, step.paulis)
        if step.noise is not None:
            ptm = step.noise @ ptm
        r = apply_ptm(r, ptm, step.qubits, n)
    return r.reshape(angles.shape[0], -1)


def pauli_weights(observables: Iterable, num_qubits: int) -> torch.Tensor:
    """``(M, 4ⁿ)`` real weights w with ⟨O_m⟩ = Σ_P w[m, P] r_P (Hermitian observables only)."""
    weights = np.zeros((0, 4**num_qubits))
    rows = []
    for obs in observables:
        op = obs if isinstance(obs, SparsePauliOp) else SparsePauliOp.from_sparse_observable(obs)
        if op.num_qubits != num_qubits:
            raise BackendError(f"observable on {op.num_qubits} qubits, circuit has {num_qubits}")
        row = np.zeros(4**num_qubits)
        for label, coeff in zip(op.paulis.to_labels(), op.coeffs, strict=True):
            if abs(coeff.imag) > 1e-12:
                raise BackendError(f"observable term {label} has a complex coefficient {coeff}")
            index = sum(_PAULI_INDEX[c] << (2 * q) for q, c in enumerate(reversed(label)))
            row[index] += coeff.real
        rows.append(row)
    if rows:
        weights = np.stack(rows)
    return torch.as_tensor(weights, dtype=torch.float64)


def _chunk_rows(noisy: NoisyProgram, num_obs: int, gradient: bool) -> int:
    per_row = (len(noisy.steps) * 3 + (num_obs if gradient else 0)) * 8 << (2 * noisy.num_qubits)
    return max(1, MEMORY_BUDGET // per_row)


def simulate(
    noisy: NoisyProgram, values: np.ndarray, weights: torch.Tensor, gradient: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """Values ``(R, M)`` and, with ``gradient``, d values / d parameters ``(R, M, P)``."""
    angle_map = noisy.program.angle_map
    rows = values.shape[0]
    num_obs = weights.shape[0]
    out = np.empty((rows, num_obs))
    grads = np.empty((rows, num_obs, values.shape[1])) if gradient else None
    chunk = _chunk_rows(noisy, num_obs, gradient)
    for start in range(0, rows, chunk):
        part = values[start : start + chunk]
        angles = torch.as_tensor(angle_map.evaluate(part), dtype=torch.float64)
        if not gradient:
            with torch.no_grad():
                out[start : start + chunk] = (evolve(noisy, angles) @ weights.T).numpy()
            continue
        angles.requires_grad_(True)
        f = evolve(noisy, angles) @ weights.T  # (r, M)
        eye = torch.eye(num_obs, dtype=f.dtype)[:, None, :].expand(num_obs, f.shape[0], num_obs)
        (angle_grads,) = torch.autograd.grad(f, angles, grad_outputs=eye, is_grads_batched=True)
        out[start : start + chunk] = f.detach().numpy()
        per_angle = angle_grads.permute(1, 0, 2).numpy()  # (r, M, S)
        grads[start : start + chunk] = angle_map.pullback(part, per_angle)
    return out, grads


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
        coerced = [EstimatorPub.coerce(pub, precision) for pub in pubs]
        job = InlineJob(self._run, coerced)
        job._submit()
        return job

    def _run(self, pubs: list[EstimatorPub]) -> PrimitiveResult[PubResult]:
        results: list[PubResult | None] = [None] * len(pubs)
        groups: dict[tuple, list[int]] = {}
        tables = []
        for i, pub in enumerate(pubs):
            noisy = self.program(pub.circuit)
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


class DensityMatrixGradient(BaseEstimatorGradient):
    """Exact gradients of noisy expectation values by autograd through the density engine."""

    def __init__(self, estimator: DensityMatrixEstimator, options: Options | None = None) -> None:
        if not isinstance(estimator, DensityMatrixEstimator):
            raise BackendError("DensityMatrixGradient needs a DensityMatrixEstimator")
        super().__init__(estimator, options=options)

    def _run(
        self,
        circuits: Sequence[QuantumCircuit],
        observables: Sequence[SparsePauliOp],
        parameter_values: Sequence[Sequence[float]] | np.ndarray,
        parameters: Sequence[Sequence[Parameter]],
        **options,
    ) -> EstimatorGradientResult:
        gradients: list[np.ndarray | None] = [None] * len(circuits)
        distinct, circuit_of = index_by_identity(circuits)
        for k in range(len(distinct)):
            members = np.flatnonzero(circuit_of == k).tolist()
            circuit = circuits[members[0]]
            noisy = self._estimator.program(circuit)
            table = np.asarray([parameter_values[i] for i in members], dtype=float)
            rows, row_of = unique_rows(table)
            keys: dict[int, int] = {}
            obs_list = []
            for i in members:
                if id(observables[i]) not in keys:
                    keys[id(observables[i])] = len(obs_list)
                    obs_list.append(observables[i])
            weights = pauli_weights(obs_list, noisy.num_qubits)
            _, grads = simulate(noisy, rows, weights, gradient=True)
            position = {p: j for j, p in enumerate(circuit.parameters)}
            for local, i in enumerate(members):
                cols = [position[p] for p in parameters[i]]
                gradients[i] = grads[row_of[local], keys[id(observables[i])], cols]
        metadata = [{"parameters": p} for p in parameters]
        return EstimatorGradientResult(
            gradients=gradients, metadata=metadata, options=Options(**options)
        )
