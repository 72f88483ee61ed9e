"""Trained-weight-aware synthesis: the fixed part of a trained circuit as a line CNOT network.

On the hardware path the model is trained, so every weight is a number and only the encoding
gates (``RY(x_i)`` for the HQCNN: a product state) change from image to image. Everything after
the encoding is one fixed unitary ``V(w)``. :func:`synthesize` compiles ``V(w)`` into a network
of ``K`` CNOTs on a *line* of qubits (Qiskit's approximate quantum compiling, AQC,
``qiskit.synthesis.unitary.aqc``: a ``spin`` CNOT network with single-qubit rotations after
every CNOT), then refines the rotation angles by Levenberg–Marquardt on the matrix residual
``e^{iβ} A(θ) − V`` until it is zero to floating-point precision where ``K`` CNOTs suffice.
A line maps onto every heavy-hex device without a SWAP, so the device runs ``K`` two-qubit gates.

The error is stated on what the model computes: for every input state and every measured
observable ``O``, ``|⟨O⟩_A − ⟨O⟩_V| ≤ 2 ‖A − e^{iα}V‖₂ ‖O‖`` (operator norm; ``‖O‖`` ≤ the sum of
its Pauli coefficients' magnitudes). A synthesis is accepted only when this bound is at most
``max_error``; ``K`` grows from ``cnots`` (or the tried list) until one is, else the template is
kept and the rejection recorded. The record also keeps the largest output change measured at
random inputs.

Fewer two-qubit gates do not by themselves mean better device outputs: the network spreads every
gate error over all measured observables, where the template's structured gates leave many of
them harmless. So the hardware path weighs an accepted synthesis against the best searched
circuit (:func:`candidate_score`, :func:`choose`; ``--synthesis-choice``): by default the one
with the smaller predicted output error under the device's calibrated noise model runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from qiskit import QuantumCircuit

from qhqcnn.errors import ConfigError

#: ``--synthesis`` choices.
METHODS = ("none", "aqc")
#: CNOT counts tried in order when none is given (61 is the lower bound of a generic
#: 4-qubit unitary; more CNOTs converge faster).
DEFAULT_CNOTS = (61, 62, 63, 64, 65, 66)


@dataclass(frozen=True)
class SynthesisOptions:
    method: str = "aqc"
    #: CNOTs of the network; ``None``: the first of ``DEFAULT_CNOTS`` that meets the bound.
    cnots: int | None = None
    max_error: float = 1e-3
    seed: int = 0
    #: L-BFGS iterations of AQC, then Levenberg–Marquardt evaluations of the refinement.
    maxiter: int = 3000
    max_refine: int = 200
    layout: str = "spin"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"synthesis must be one of {', '.join(METHODS)}")
        if self.cnots is not None and self.cnots < 1:
            raise ConfigError("the synthesis needs at least one CNOT")

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "cnots": self.cnots,
            "max_error": self.max_error,
            "seed": self.seed,
            "maxiter": self.maxiter,
            "max_refine": self.max_refine,
            "layout": self.layout,
        }


# -- splitting the template ----------------------------------------------------------------------
def split_encoding(template) -> tuple[QuantumCircuit, QuantumCircuit]:
    """(encoding, rest): the gates that depend on inputs, and all gates after them.

    Raises :class:`ConfigError` unless every input-dependent gate comes before every other gate
    (barriers ignored): only then is the rest one fixed unitary once the weights are bound.
    """
    inputs = set(template.input_params)
    circuit = template.circuit
    encoding = QuantumCircuit(*circuit.qregs, name="encoding")
    rest = QuantumCircuit(*circuit.qregs, name="fixed")
    rest.global_phase = circuit.global_phase
    for ins in circuit.data:
        if ins.operation.name == "barrier":
            continue
        params = set()
        for value in ins.operation.params:
            params |= set(getattr(value, "parameters", ()))
        if params & inputs:
            if rest.data:
                raise ConfigError(
                    f"{template.name}: input-dependent gates follow weight gates; the fixed part "
                    "is not one unitary"
                )
            encoding.append(ins)
        else:
            rest.append(ins)
    return encoding, rest


def fixed_unitary(template, weights) -> np.ndarray:
    """The matrix of everything after the encoding, with the weights bound."""
    from qiskit.quantum_info import Operator

    _, rest = split_encoding(template)
    weights = np.asarray(weights, dtype=float)
    if len(weights) != len(template.weight_params):
        raise ConfigError(f"{len(template.weight_params)} weights expected, got {len(weights)}")
    bound = rest.assign_parameters(
        {
            p: float(v)
            for p, v in zip(template.weight_params, weights, strict=True)
            if p in set(rest.parameters)
        }  # fmt: skip
    )
    return Operator(bound).data


# -- AQC and refinement --------------------------------------------------------------------------
def aqc_network(unitary: np.ndarray, cnots: int, *, seed: int, maxiter: int, layout: str):
    """AQC of ``unitary`` into a line-connected network of ``cnots`` CNOT units."""
    from functools import partial

    import scipy.optimize
    from qiskit.synthesis.unitary.aqc import AQC, CNOTUnitCircuit, make_cnot_network
    from qiskit.synthesis.unitary.aqc.fast_gradient.fast_gradient import FastCNOTUnitObjective

    n = int(round(np.log2(unitary.shape[0])))
    network = make_cnot_network(n, network_layout=layout, connectivity_type="line", depth=cnots)
    circuit = CNOTUnitCircuit(n, network, tol=0.0)
    objective = FastCNOTUnitObjective(n, network)
    optimizer = partial(
        scipy.optimize.minimize,
        args=(),
        method="L-BFGS-B",
        options={"maxiter": maxiter, "ftol": 1e-16, "gtol": 1e-14},
    )
    AQC(optimizer=optimizer, seed=seed).compile_unitary(unitary, circuit, objective)
    return QuantumCircuit(n, global_phase=circuit.global_phase).compose(circuit)


_ROTATIONS = {"rx", "ry", "rz"}
_PAULI = {
    "rx": np.array([[0, 1], [1, 0]], dtype=complex),
    "ry": np.array([[0, -1j], [1j, 0]], dtype=complex),
    "rz": np.array([[1, 0], [0, -1]], dtype=complex),
}


def _placed(matrix: np.ndarray, qubit: int, n: int) -> np.ndarray:
    """A single-qubit ``matrix`` on ``qubit`` of ``n`` (Qiskit's little-endian order)."""
    out = np.eye(1, dtype=complex)
    for q in reversed(range(n)):
        out = np.kron(out, matrix if q == qubit else np.eye(2))
    return out


def _cx(control: int, target: int, n: int) -> np.ndarray:
    d = 2**n
    out = np.zeros((d, d), dtype=complex)
    for i in range(d):
        out[i ^ (1 << target) if i >> control & 1 else i, i] = 1
    return out


class _Network:
    """A circuit of rx, ry, rz and cx as a function of its rotation angles, with the exact
    derivative of its matrix in each angle (for the refinement)."""

    def __init__(self, circuit: QuantumCircuit) -> None:
        n = circuit.num_qubits
        self.n, self.d = n, 2**n
        self.ops: list[tuple[str, tuple[int, ...]]] = []
        self.fixed: list[np.ndarray | None] = []
        self.generators: list[np.ndarray | None] = []
        angles = []
        for ins in circuit.data:
            name = ins.operation.name
            qubits = tuple(circuit.find_bit(q).index for q in ins.qubits)
            if name == "cx":
                self.fixed.append(_cx(*qubits, n))
                self.generators.append(None)
            elif name in _ROTATIONS:
                self.fixed.append(None)
                self.generators.append(_placed(_PAULI[name], qubits[0], n))
                angles.append(float(ins.operation.params[0]))
            else:
                raise ConfigError(f"refinement handles rx, ry, rz and cx, not {name}")
            self.ops.append((name, qubits))
        self.angles = np.asarray(angles)

    def gates(self, angles: np.ndarray) -> list[np.ndarray]:
        eye = np.eye(self.d, dtype=complex)
        out, k = [], 0
        for fixed, generator in zip(self.fixed, self.generators, strict=True):
            if generator is None:
                out.append(fixed)
            else:
                out.append(np.cos(angles[k] / 2) * eye - 1j * np.sin(angles[k] / 2) * generator)
                k += 1
        return out

    def matrix(self, angles: np.ndarray) -> np.ndarray:
        out = np.eye(self.d, dtype=complex)
        for gate in self.gates(angles):
            out = gate @ out
        return out

    def jacobian(self, angles: np.ndarray) -> list[np.ndarray]:
        """d matrix / d angle_k, in angle order."""
        gates = self.gates(angles)
        before = [np.eye(self.d, dtype=complex)]
        for gate in gates:
            before.append(gate @ before[-1])
        after = np.eye(self.d, dtype=complex)
        out = []
        for index in range(len(gates) - 1, -1, -1):
            generator = self.generators[index]
            if generator is not None:
                out.append(after @ (-0.5j * generator) @ gates[index] @ before[index])
            after = after @ gates[index]
        return out[::-1]

    def circuit(self, angles: np.ndarray, phase: float) -> QuantumCircuit:
        out = QuantumCircuit(self.n, global_phase=float(phase))
        k = 0
        for name, qubits in self.ops:
            if name == "cx":
                out.cx(*qubits)
            else:
                getattr(out, name)(float(angles[k]), qubits[0])
                k += 1
        return out


def refine(circuit: QuantumCircuit, unitary: np.ndarray, max_nfev: int) -> QuantumCircuit:
    """The same gates with rotation angles (and global phase) fitted to ``unitary`` by
    Levenberg–Marquardt on the matrix residual ``e^{iβ} A(θ) − V`` (exact Jacobian)."""
    from scipy.optimize import least_squares

    network = _Network(circuit)

    def residual(x: np.ndarray) -> np.ndarray:
        diff = np.exp(1j * x[-1]) * network.matrix(x[:-1]) - unitary
        return np.concatenate([diff.real.ravel(), diff.imag.ravel()])

    def jacobian(x: np.ndarray) -> np.ndarray:
        phase = np.exp(1j * x[-1])
        columns = [phase * m for m in network.jacobian(x[:-1])]
        columns.append(1j * phase * network.matrix(x[:-1]))
        stacked = np.stack([c.ravel() for c in columns], axis=1)
        return np.vstack([stacked.real, stacked.imag])

    start = np.append(network.angles, float(circuit.global_phase))
    fit = least_squares(
        residual, start, jac=jacobian, method="lm", xtol=1e-15, ftol=1e-15, gtol=1e-15,
        max_nfev=max_nfev,
    )  # fmt: skip
    best = fit.x if np.sum(fit.fun**2) <= np.sum(residual(start) ** 2) else start
    return network.circuit(best[:-1], best[-1])


def operator_distance(circuit: QuantumCircuit, unitary: np.ndarray) -> tuple[float, float]:
    """(``min_α``-aligned ``‖A − e^{iα}V‖₂``, infidelity ``1 − |tr A†V|²/d²``)."""
    from qiskit.quantum_info import Operator

    matrix = Operator(circuit).data
    overlap = np.trace(matrix.conj().T @ unitary)
    d = unitary.shape[0]
    phase = overlap / abs(overlap) if abs(overlap) > 0 else 1.0
    distance = float(np.linalg.norm(matrix * phase - unitary, 2))
    return distance, float(1 - abs(overlap) ** 2 / d**2)


def observable_norm(observable) -> float:
    return float(np.sum(np.abs(observable.coeffs)))


# -- the synthesized template ------------------------------------------------------------------
def synthesize(template, weights, options: SynthesisOptions) -> tuple[Any, dict[str, Any]]:
    """``(template', record)``: ``template'`` computes ``template`` at ``weights`` with the fixed
    part replaced by the accepted CNOT network (its only parameters are the inputs), or is
    ``template`` itself if no network met ``options.max_error`` (``record["accepted"]`` False).
    """
    from qiskit_machine_learning.utils import circuit_cache_key

    weights = np.asarray(weights, dtype=float)
    key = (circuit_cache_key(template.circuit), weights.tobytes(), repr(options))
    if key in _SYNTHESIZED:
        circuit, record = _SYNTHESIZED[key]
    else:
        circuit, record = _synthesize(template, weights, options)
        _SYNTHESIZED[key] = (circuit, record)
    record = dict(record)
    if circuit is None:
        return template, record
    by_name = {p.name: p for p in template.input_params}
    swap = {p: by_name[p.name] for p in circuit.parameters if by_name[p.name] != p}
    if swap:  # another instance of the template: its own Parameter objects, via placeholders
        from qiskit.circuit import Parameter

        hold = {old: Parameter(f"_swap{i}") for i, old in enumerate(swap)}
        circuit = circuit.assign_parameters(hold)
        circuit.assign_parameters({hold[old]: new for old, new in swap.items()}, inplace=True)
    bound = replace(
        template,
        circuit=circuit,
        weight_params=(),
        init_weights=lambda rng: np.zeros(0),
        description=f"{template.description} (fixed part synthesized: {record['method']}, "
        f"{record['cnots']} CNOTs on a line)",
    )
    return bound, record


#: Syntheses of this process (each runs an optimization of seconds to minutes).
_SYNTHESIZED: dict[tuple, tuple[QuantumCircuit | None, dict[str, Any]]] = {}


def _synthesize(template, weights, options):
    encoding, _ = split_encoding(template)
    unitary = fixed_unitary(template, weights)
    norm = max((observable_norm(o) for o in template.observables), default=1.0)
    tried = []
    counts = [options.cnots] if options.cnots is not None else list(DEFAULT_CNOTS)
    for cnots in counts:
        start = time.perf_counter()
        network = aqc_network(
            unitary, cnots, seed=options.seed, maxiter=options.maxiter, layout=options.layout
        )
        network = refine(network, unitary, options.max_refine)
        distance, infidelity = operator_distance(network, unitary)
        row = {
            "cnots": cnots,
            "operator_distance": distance,
            "infidelity": max(0.0, infidelity),
            "output_bound": 2 * distance * norm,
            "seconds": round(time.perf_counter() - start, 1),
        }
        tried.append(row)
        if row["output_bound"] <= options.max_error:
            circuit = QuantumCircuit(*template.circuit.qregs, name=f"{template.name}_synth")
            circuit.compose(encoding, inplace=True)
            circuit.barrier()
            circuit.compose(network, inplace=True)
            circuit.global_phase = network.global_phase
            record = {
                "method": options.method,
                "options": options.to_dict(),
                "accepted": True,
                **row,
                "tried": tried,
                "network": f"{options.layout} CNOT network on a line of {template.num_qubits} "
                "qubits (qiskit AQC, then Levenberg–Marquardt refinement)",
                "bound": "|Δ⟨O⟩| ≤ 2‖A − e^{iα}V‖₂‖O‖ for every input state",
            }
            record["max_abs_deviation_random_inputs"] = deviation_at_inputs(
                circuit, template, weights
            )
            return circuit, record
    return None, {
        "method": options.method,
        "options": options.to_dict(),
        "accepted": False,
        "tried": tried,
        "note": f"no network met the bound {options.max_error:g}: the template is used",
    }


def deviation_at_inputs(circuit: QuantumCircuit, template, weights, count: int = 64,
                        seed: int = 0) -> float:  # fmt: skip
    """Largest |⟨O⟩ synthesized − ⟨O⟩ template| at ``count`` random inputs (exact values)."""
    from qiskit.quantum_info import Statevector

    rng = np.random.default_rng(seed)
    rows = rng.uniform(-np.pi, np.pi, (count, len(template.input_params)))
    params = list(template.input_params) + list(template.weight_params)
    names = {p.name: i for i, p in enumerate(template.input_params)}
    worst = 0.0
    for row in rows:
        ref = Statevector(
            template.circuit.assign_parameters(
                dict(zip(params, np.concatenate([row, weights]), strict=True))
            )
        )
        got = Statevector(circuit.assign_parameters({p: row[names[p.name]]
                                                     for p in circuit.parameters}))  # fmt: skip
        for obs in template.observables:
            worst = max(
                worst, abs(float(np.real(ref.expectation_value(obs) - got.expectation_value(obs))))
            )
    return worst


# -- synthesized or searched: which one runs -----------------------------------------------------
def idle_factor(isa: QuantumCircuit, target) -> tuple[float, float]:
    """``(Π_q exp(−idle_q / T2_q), largest idle_q in seconds)`` over the qubits the circuit
    uses: ``idle_q`` is the time qubit ``q`` waits between its first and last gate in an
    as-soon-as-possible schedule of the target's gate durations (1.0 when unknown)."""
    properties = getattr(target, "qubit_properties", None) or []
    ready: dict[int, float] = {}
    busy: dict[int, float] = {}
    first: dict[int, float] = {}
    for ins in isa.data:
        name = ins.operation.name
        if name == "barrier":
            continue
        qargs = tuple(isa.find_bit(q).index for q in ins.qubits)
        try:
            duration = float(target[name][qargs].duration or 0.0)
        except (KeyError, AttributeError, TypeError):
            duration = 0.0
        start = max(ready.get(q, 0.0) for q in qargs)
        for q in qargs:
            first.setdefault(q, start)
            ready[q] = start + duration
            busy[q] = busy.get(q, 0.0) + duration
    log_factor, longest = 0.0, 0.0
    end = max(ready.values(), default=0.0)
    for q in ready:
        idle = max(0.0, end - first[q] - busy[q])
        longest = max(longest, idle)
        t2 = getattr(properties[q], "t2", None) if q < len(properties) and properties[q] else None
        if t2:
            log_factor -= idle / float(t2)
    return float(np.exp(log_factor)), longest


def noisy_outputs(prepared, backend, rows: np.ndarray, names: list[str]) -> np.ndarray:
    """⟨O⟩ of ``prepared`` under ``backend``'s calibrated noise model (Aer density matrix,
    exact expectation values, no shots; readout errors not included) at parameter ``rows``
    (columns named ``names``), on the qubits the circuit uses."""
    from qiskit_aer.noise import NoiseModel
    from qiskit_aer.primitives import EstimatorV2

    from qhqcnn.backends.compact import compact_circuit
    from qhqcnn.backends.trim import TrimmedBackend

    compact = compact_circuit(prepared)
    circuit = compact.prepared.circuit
    model = NoiseModel.from_backend(TrimmedBackend(backend, list(compact.physical_qubits)))
    column = {name: k for k, name in enumerate(names)}
    params = list(circuit.parameters)
    values = np.asarray(rows, dtype=float)[:, [column[p.name] for p in params]]
    estimator = EstimatorV2(
        options={
            "backend_options": {"method": "density_matrix", "noise_model": model},
            "run_options": {"approximation": True},
        }
    )
    pub = (circuit, [list(compact.prepared.observables)], values.reshape(len(values), 1, -1))
    return np.asarray(estimator.run([pub]).result()[0].data.evs, dtype=float)


def candidate_score(prepared, backend, observables, rows, names, exact) -> dict[str, Any]:
    """The facts by which a device circuit is weighed: two-qubit gates, depth, duration, the
    search's estimated success probability (ESP; also with an idle-time factor), and the
    predicted output error under the device's noise model at ``rows`` against ``exact``."""
    from qhqcnn.backends.search import calibrated_score, measured_qubits
    from qhqcnn.backends.transpile import two_qubit_gate_count

    isa = prepared.circuit
    target = backend.target
    esp = calibrated_score(isa, target, measured_qubits(isa, observables))["esp"]
    idle, longest = idle_factor(isa, target)
    try:
        duration = float(isa.estimate_duration(target, unit="s"))
    except Exception:  # noqa: BLE001 - a target without durations
        duration = None
    ops = isa.count_ops()
    facts: dict[str, Any] = {}
    try:
        noisy = noisy_outputs(prepared, backend, rows, names)
    except Exception as exc:  # noqa: BLE001 - a device without a usable noise model
        facts = {"predicted_mae": None, "predicted_scale": None, "predicted_error": str(exc)}
    else:
        scales = [
            float(np.polyfit(exact[:, k], noisy[:, k], 1)[0]) if np.ptp(exact[:, k]) > 1e-9
            else 1.0
            for k in range(exact.shape[1])
        ]  # fmt: skip
        facts = {
            "predicted_mae": round(float(np.mean(np.abs(noisy - exact))), 6),
            "predicted_scale": round(float(np.mean(scales)), 4),
        }
    return {
        "two_qubit_gates": two_qubit_gate_count(isa),
        "single_qubit_gates": int(sum(v for k, v in ops.items() if k in ("sx", "x", "rz"))),
        "sx": int(ops.get("sx", 0) + ops.get("x", 0)),
        "depth": isa.depth(),
        "duration_s": duration,
        "esp": round(esp, 6),
        "longest_idle_s": longest,
        "esp_with_idle": round(esp * idle, 6),
        **facts,
        "scored_images": int(len(rows)),
    }


#: What each ``synthesis_choice`` compares (higher is better for ESP, lower for the error).
CHOICE_KEYS = {"noisy": ("predicted_mae", -1), "esp": ("esp", 1)}


def choose(searched: dict[str, Any], synthesized: dict[str, Any], how: str) -> dict[str, Any]:
    """``{"chosen": "synthesized" | "searched", "reason": …}``: the better-scored candidate
    (ties keep the searched circuit); ``how == "always"`` takes the synthesized one."""
    if how == "always":
        return {"chosen": "synthesized", "by": how, "reason": "--synthesis-choice always"}
    fallback = ""
    if how == "noisy" and None in (searched.get("predicted_mae"), synthesized.get("predicted_mae")):
        how, fallback = "esp", "no noise-model prediction, so by ESP: "
    key, sign = CHOICE_KEYS[how]
    better = sign * synthesized[key] > sign * searched[key]
    label = {"predicted_mae": "predicted output MAE under the device's noise model",
             "esp": "estimated success probability"}[key]  # fmt: skip
    return {
        "chosen": "synthesized" if better else "searched",
        "by": how,
        "reason": f"{fallback}{label}: synthesized {synthesized[key]:.4g}, "
        f"searched {searched[key]:.4g}",
    }
