"""This engine vs PennyLane and TorchQuantum on one quantum layer, interleaved in one process.

Usage::

    python benchmarks/bench_peers.py --threads 1 [--qubits 4 8 12 16] [--batches 64 1024]
        [--noisy-qubits 4 5 6 7 8] [--skip-exact] [--skip-noisy] [--max-step-seconds 60]

The layer (issue #16): RY(x_i) encoding on every qubit, then 3 x [U3(w) on every qubit + CNOT
ring (i -> i+1 mod n)], outputs <Z_i> for every qubit; one step = forward + backward of
``outputs.sum()`` with respect to the inputs and the weights.

Exact rows: this engine through ``EstimatorQNN`` + ``TorchConnector`` (the package's path: the
full Jacobian, every observable's gradient, then NumPy), this engine's ``ExactTorchLayer`` (a native
``torch.autograd.Function``: one vector-Jacobian product, complex128 and complex64), PennyLane
``default.qubit`` (backprop) and ``lightning.qubit`` (adjoint) through ``qml.qnn.TorchLayer``, and
TorchQuantum (``torchquantum-ng``, its default complex64). Noisy rows (4-8 qubits, the same layer
with depolarizing noise after every gate: 1e-3 after RY/U, 1e-2 after CX): the density-matrix
engine and Aer's density-matrix method, both through ``EstimatorQNN`` (``forward`` +
``backward``: full Jacobian; Aer with the package's broadcast parameter-shift gradient), and
PennyLane ``default.mixed`` (backprop, ``TorchLayer``: one vector-Jacobian product).

Before timing, every implementation's values and gradients are compared with this engine's
complex128 results (the maximum absolute differences are printed). Then the implementations take
turns, one step each per round, so that all of them see the same load; the table shows medians.
Peers are optional (``pip install .[bench]``) and skipped with a printed note when absent; a
configuration is also skipped (with the reason printed) when its projected memory or its projected
step time (from the previous, smaller configuration) exceeds the limits.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--qubits", type=int, nargs="+", default=[4, 8, 12, 16])
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 1024])
    parser.add_argument("--noisy-qubits", type=int, nargs="+", default=[4, 5, 6, 7, 8])
    parser.add_argument("--noisy-batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds (fewer if slow)")
    parser.add_argument("--max-step-seconds", type=float, default=60.0)
    parser.add_argument("--max-memory-gb", type=float, default=6.0)
    parser.add_argument("--skip-exact", action="store_true")
    parser.add_argument("--skip-noisy", action="store_true")
    parser.add_argument("--only", nargs="*", default=None, help="implementation labels to run")
    return parser.parse_args()


ARGS = _parse() if __name__ == "__main__" else None
if ARGS is not None:
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)

import warnings  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from qiskit.circuit import ParameterVector, QuantumCircuit  # noqa: E402
from qiskit.quantum_info import SparsePauliOp  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from qhqcnn.engine import ExactTorchLayer, FastEstimator, FastEstimatorGradient  # noqa: E402
from qhqcnn.engine.trace_cache import GLOBAL_TRACE_CACHE  # noqa: E402

warnings.filterwarnings("ignore")
LAYERS = 3
P1, P2 = 1e-3, 1e-2  # depolarizing after 1-qubit and after 2-qubit gates (noisy table)


# ----------------------------------------------------------------------------- the layer
def layer_circuit(n: int):
    """RY encoding + 3 x [U3 on every qubit + CX ring]; <Z_i> observables."""
    x = ParameterVector("x", n)
    w = ParameterVector("w", 3 * n * LAYERS)
    qc = QuantumCircuit(n)
    for i in range(n):
        qc.ry(x[i], i)
    k = 0
    for _ in range(LAYERS):
        for i in range(n):
            qc.u(w[k], w[k + 1], w[k + 2], i)
            k += 3
        for i in range(n):
            qc.cx(i, (i + 1) % n)
    obs = [SparsePauliOp.from_sparse_list([("Z", [i], 1.0)], n) for i in range(n)]
    return qc, list(x), list(w), obs


def data(n: int, batch: int):
    rng = np.random.default_rng(1234 + n)
    return rng.uniform(0, np.pi, (batch, n)), rng.uniform(0, 2 * np.pi, 3 * n * LAYERS)


class Impl:
    """One implementation of the layer: ``step()`` runs forward + backward of ``outputs.sum()``
    and returns ``(values (B, n), d sum / d x (B, n), d sum / d w (P,))`` as float64 NumPy."""

    def __init__(self, label: str, step: Callable[[], tuple], tol: float) -> None:
        self.label, self.step, self.tol = label, step, tol


def torch_step(module: torch.nn.Module, x: np.ndarray, dtype=torch.float64, before=None):
    """``before``: called at the start of every step (the engine's TorchConnector column clears
    the forward-trace cache there, so that repeating the same batch measures a fresh forward
    simulation, as a training step with updated weights needs)."""
    xt = torch.as_tensor(x, dtype=dtype)

    def step():
        if before is not None:
            before()
        inputs = xt.clone().requires_grad_(True)
        module.zero_grad(set_to_none=True)
        out = module(inputs)
        out.sum().backward()
        weight = next(p for p in module.parameters())
        return (
            out.detach().double().numpy(),
            inputs.grad.double().numpy(),
            weight.grad.double().numpy(),
        )

    return step


# ----------------------------------------------------------------------------- exact peers
def engine_connector(n, x, w):
    from qiskit_machine_learning.connectors import TorchConnector
    from qiskit_machine_learning.neural_networks import EstimatorQNN

    qc, xp, wp, obs = layer_circuit(n)
    estimator = FastEstimator()
    qnn = EstimatorQNN(
        circuit=qc,
        observables=obs,
        input_params=xp,
        weight_params=wp,
        estimator=estimator,
        gradient=FastEstimatorGradient(estimator),
        input_gradients=True,
        default_precision=0.0,
    )
    module = TorchConnector(qnn, initial_weights=w)
    return torch_step(module, x, torch.float32, before=GLOBAL_TRACE_CACHE.clear)


def engine_layer(n, x, w, dtype):
    qc, xp, wp, obs = layer_circuit(n)
    return torch_step(ExactTorchLayer(qc, obs, xp, wp, initial_weights=w, dtype=dtype), x)


def pennylane_layer(n, x, w, device_name, diff_method):
    import pennylane as qml

    dev = qml.device(device_name, wires=n)

    @qml.qnode(dev, interface="torch", diff_method=diff_method)
    def circuit(inputs, weights):
        for i in range(n):
            qml.RY(inputs[..., i], wires=i)
        k = 0
        for _ in range(LAYERS):
            for i in range(n):
                qml.U3(weights[k], weights[k + 1], weights[k + 2], wires=i)
                k += 3
            for i in range(n):
                qml.CNOT(wires=[i, (i + 1) % n])
        return [qml.expval(qml.PauliZ(i)) for i in range(n)]

    return pennylane_step(circuit, w, x)


def pennylane_step(circuit, w, x):
    """The step of a PennyLane QNode as a ``TorchLayer`` (float64) holding the weights ``w``."""
    import pennylane as qml

    module = qml.qnn.TorchLayer(circuit, {"weights": (len(w),)}).double()
    with torch.no_grad():
        module.weights.copy_(torch.as_tensor(w))
    return torch_step(module, x)


def _import_torchquantum():
    # torchquantum's dataset helpers import torchvision, whose build here does not match torch
    # 2.13; the layer needs none of them.
    sys.modules.setdefault("torchquantum.dataset", types.ModuleType("torchquantum.dataset"))
    import torchquantum as tq

    return tq


def torchquantum_layer(n, x, w):
    tq = _import_torchquantum()
    import torchquantum.functional as tqf

    class Layer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weights = torch.nn.Parameter(torch.as_tensor(w, dtype=torch.float32))

        def forward(self, inputs):
            qdev = tq.QuantumDevice(n_wires=n, bsz=inputs.shape[0], device="cpu")
            for i in range(n):
                tqf.ry(qdev, wires=i, params=inputs[:, i : i + 1])
            k = 0
            for _ in range(LAYERS):
                for i in range(n):
                    tqf.u3(qdev, wires=i, params=self.weights[k : k + 3].unsqueeze(0))
                    k += 3
                for i in range(n):
                    tqf.cnot(qdev, wires=[i, (i + 1) % n])
            return tq.measurement.expval(qdev, list(range(n)), [tq.PauliZ()] * n)

    return torch_step(Layer(), x, torch.float32)


def have(module: str) -> bool:
    try:
        if module == "torchquantum":
            _import_torchquantum()
        else:
            __import__(module)
        return True
    except Exception as error:  # noqa: BLE001 - any import failure means "absent"
        print(f"note: {module} not usable ({type(error).__name__}: {error}); its rows are skipped")
        return False


# ----------------------------------------------------------------------------- timing
def compare(reference, result) -> float:
    """Largest difference of values, input and weight gradients, each relative to the largest
    reference entry (at least 1): the weight gradient sums over the batch, so float32 paths
    (TorchConnector, TorchQuantum) drift with the batch size in absolute terms."""
    return max(
        float(np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(a)))))
        for a, b in zip(reference, result, strict=True)
    )


def run_table(title, configs, make_impls, reference_label, memory_of, cost_scale):
    """Check and time every implementation of every config; print one table."""
    print(f"\n## {title}\n")
    columns: list[str] = []
    rows = []
    history: dict[str, tuple[tuple, float]] = {}
    for config in configs:
        impls, notes = [], []
        for label, factory, tol in make_impls(*config):
            if ARGS.only and label not in ARGS.only:
                continue
            if label not in columns:
                columns.append(label)
            gigabytes = memory_of(label, *config) / 1e9
            if gigabytes > ARGS.max_memory_gb:
                notes.append(
                    f"{label}: skipped, needs ~{gigabytes:.0f} GB (limit {ARGS.max_memory_gb:g})"
                )
                continue
            previous = history.get(label)
            if previous is not None:
                projected = previous[1] * cost_scale(previous[0], config)
                if projected > ARGS.max_step_seconds:
                    notes.append(
                        f"{label}: skipped, projected {projected:.0f} s per step from "
                        f"{previous[1]:.2f} s at {previous[0]} (limit {ARGS.max_step_seconds:g} s)"
                    )
                    continue
            try:
                impls.append(Impl(label, factory(), tol))
            except Exception as error:  # noqa: BLE001
                notes.append(f"{label}: could not be built ({type(error).__name__}: {error})")
        # check (this is also the warm-up)
        reference = None
        first: dict[str, float] = {}
        checked = []
        for impl in impls:
            start = time.perf_counter()
            try:
                result = impl.step()
            except Exception as error:  # noqa: BLE001
                notes.append(f"{impl.label}: failed ({type(error).__name__}: {error})")
                continue
            first[impl.label] = time.perf_counter() - start
            if impl.label == reference_label:
                reference = result
            checked.append((impl, result))
        timed = []
        for impl, result in checked:
            if reference is None:
                notes.append(f"{impl.label}: not checked (no reference)")
                timed.append(impl)
                continue
            diff = compare(reference, result)
            status = "ok" if diff <= impl.tol else "MISMATCH"
            notes.append(f"{impl.label}: max relative diff {diff:.1e} ({status}, tol {impl.tol:g})")
            if status == "ok":
                timed.append(impl)
        times: dict[str, list[float]] = {impl.label: [] for impl in timed}
        cpu: dict[str, list[float]] = {impl.label: [] for impl in timed}
        budget = {
            impl.label: ARGS.repeats
            if first[impl.label] < 2
            else (3 if first[impl.label] < 15 else 1)
            for impl in timed
        }
        for round_ in range(ARGS.repeats):
            for impl in timed:
                if round_ >= budget[impl.label]:
                    continue
                start, start_cpu = time.perf_counter(), time.process_time()
                impl.step()
                times[impl.label].append(time.perf_counter() - start)
                cpu[impl.label].append(time.process_time() - start_cpu)
        medians = {label: statistics.median(v) for label, v in times.items() if v}
        cpu_medians = {label: statistics.median(v) for label, v in cpu.items() if v}
        for label, value in medians.items():
            history[label] = (config, value)
        rows.append((config, medians, cpu_medians, {k: len(v) for k, v in times.items()}))
        load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
        print(f"config {config}: load average {load}")
        for note in notes:
            print(f"  {note}")
        sys.stdout.flush()
    return columns, rows


def print_table(key_names, columns, rows, ours, peers):
    """Two tables: wall-clock and CPU-time medians (ms), with the fastest peer's ratio to ours."""
    for title, which in (("wall ms", 1), ("CPU ms", 2)):
        head = key_names + columns + ["fastest peer", "fastest peer / ours"]
        print(f"\n{title} per step (median; timed rounds in parentheses):\n")
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for row in rows:
            config, medians, counts = row[0], row[which], row[3]
            cells = [str(c) for c in config]
            for column in columns:
                value = medians.get(column)
                cells.append("-" if value is None else f"{value * 1000:,.1f} ({counts[column]})")
            peer = {c: medians[c] for c in peers if c in medians}
            mine = {c: medians[c] for c in ours if c in medians}
            if peer and mine:
                best_peer = min(peer, key=peer.get)
                ratios = ", ".join(f"{c}: {peer[best_peer] / v:.2f}x" for c, v in mine.items())
                cells += [best_peer, ratios]
            else:
                cells += ["-", "-"]
            print("| " + " | ".join(cells) + " |")
    print("\n'-' = skipped or not timed (see the notes above the tables)")


def exact_tables():
    pennylane = have("pennylane")
    torchquantum = have("torchquantum")
    ours = ["engine TorchConnector", "engine ExactTorchLayer c128", "engine ExactTorchLayer c64"]
    peers = []
    if pennylane:
        peers += ["PL default.qubit", "PL lightning.qubit"]
    if torchquantum:
        peers += ["TorchQuantum"]

    def make(n, batch):
        x, w = data(n, batch)
        items = [
            ("engine ExactTorchLayer c128", lambda: engine_layer(n, x, w, torch.complex128), 1e-9),
            ("engine TorchConnector", lambda: engine_connector(n, x, w), 2e-5),
            ("engine ExactTorchLayer c64", lambda: engine_layer(n, x, w, torch.complex64), 2e-4),
        ]
        if pennylane:
            items.append(
                (
                    "PL default.qubit",
                    lambda: pennylane_layer(n, x, w, "default.qubit", "backprop"),
                    1e-9,
                )
            )
            items.append(
                (
                    "PL lightning.qubit",
                    lambda: pennylane_layer(n, x, w, "lightning.qubit", "adjoint"),
                    1e-6,  # its adjoint gradients agree to ~3e-8 here
                )
            )
        if torchquantum:
            items.append(("TorchQuantum", lambda: torchquantum_layer(n, x, w), 2e-4))
        return items

    def memory(label, n, batch):
        state = batch * (16 << n)
        gates = n * (1 + 2 * LAYERS)
        if label == "PL default.qubit":
            return 2 * gates * state  # autograd keeps every intermediate state (and temporaries)
        if label == "TorchQuantum":
            return gates * state  # the same in complex64
        if label == "engine TorchConnector":
            return 4 * state * (n + 2) / max(1, batch // 64)  # chunked rows
        return 2 * state  # ExactTorchLayer: final states kept, rows in chunks of <= 256 MB

    def scale(old, new):
        return (new[1] / old[1]) * 2.0 ** (new[0] - old[0])

    configs = [(n, b) for b in ARGS.batches for n in ARGS.qubits]
    columns, rows = run_table(
        "Exact layer: forward + backward of outputs.sum()",
        configs,
        make,
        "engine ExactTorchLayer c128",
        memory,
        scale,
    )
    print_table(["qubits", "batch"], columns, rows, ours, peers)


# ----------------------------------------------------------------------------- noisy peers
def noise_model():
    from qiskit_aer.noise import NoiseModel, depolarizing_error

    model = NoiseModel()
    model.add_all_qubit_quantum_error(depolarizing_error(P1, 1), ["ry", "u"])
    model.add_all_qubit_quantum_error(depolarizing_error(P2, 2), ["cx"])
    return model


def qnn_jacobian_step(n, x, w, estimator, gradient):
    from qiskit_machine_learning.neural_networks import EstimatorQNN

    qc, xp, wp, obs = layer_circuit(n)
    qnn = EstimatorQNN(
        circuit=qc,
        observables=obs,
        input_params=xp,
        weight_params=wp,
        estimator=estimator,
        gradient=gradient,
        input_gradients=True,
        default_precision=0.0,
    )

    def step():
        values = qnn.forward(x, w)
        gx, gw = qnn.backward(x, w)
        return values, gx.sum(1), gw.sum((0, 1))

    return step


def density_engine(n, x, w):
    from qhqcnn.noise.density import DensityMatrixEstimator, DensityMatrixGradient

    estimator = DensityMatrixEstimator(noise_model())
    return qnn_jacobian_step(n, x, w, estimator, DensityMatrixGradient(estimator))


def aer_density(n, x, w):
    """Aer EstimatorV2 (density matrix, same noise model): values and the full Jacobian by the
    parameter-shift rule on the circuit parameters (every parameter is one RY or U angle, so
    shifts of +-pi/2 are exact; shifting the parameters keeps the gates, and so the noise, as
    they are, which qiskit-ml's rewrite of U gates would not), all shifted rows in ONE PUB."""
    from qiskit_aer.primitives import EstimatorV2 as AerEstimator

    estimator = AerEstimator(
        options={
            "default_precision": 0.0,
            "backend_options": {"method": "density_matrix", "noise_model": noise_model()},
        }
    )
    qc, xp, wp, obs = layer_circuit(n)
    names = [p.name for p in qc.parameters]
    xcols = [names.index(p.name) for p in xp]
    wcols = [names.index(p.name) for p in wp]
    base = np.empty((x.shape[0], len(names)))
    base[:, xcols] = x
    base[:, wcols] = w
    count = len(names)
    shifts = np.concatenate(
        [np.zeros((1, count)), np.eye(count) * np.pi / 2, -np.eye(count) * np.pi / 2]
    )
    table = (base[:, None, :] + shifts[None]).reshape(-1, count)  # (B * (1 + 2P), P)
    observables = np.empty((n, 1), dtype=object)
    for i, item in enumerate(obs):
        observables[i, 0] = item

    def step():
        evs = estimator.run([(qc, observables, table)]).result()[0].data.evs  # (n, B * (1+2P))
        evs = evs.reshape(n, x.shape[0], 1 + 2 * count)
        values = evs[:, :, 0].T
        jac = (evs[:, :, 1 : 1 + count] - evs[:, :, 1 + count :]) / 2  # (n, B, P)
        return values, jac[:, :, xcols].sum(0), jac[:, :, wcols].sum((0, 1))

    return step


def pennylane_mixed(n, x, w):
    import pennylane as qml

    dev = qml.device("default.mixed", wires=n)
    p1 = 3 * P1 / 4  # Aer's depolarizing_error(l, 1) = PennyLane's DepolarizingChannel(3l/4)
    paulis = [
        np.eye(2),
        np.array([[0, 1], [1, 0]]),
        np.array([[0, -1j], [1j, 0]]),
        np.diag([1, -1]),
    ]
    kraus2 = []
    for a in range(4):
        for b in range(4):
            weight = 1 - 15 * P2 / 16 if a == b == 0 else P2 / 16
            kraus2.append(np.sqrt(weight) * np.kron(paulis[a], paulis[b]))

    @qml.qnode(dev, interface="torch", diff_method="backprop")
    def circuit(inputs, weights):
        for i in range(n):
            qml.RY(inputs[..., i], wires=i)
            qml.DepolarizingChannel(p1, wires=i)
        k = 0
        for _ in range(LAYERS):
            for i in range(n):
                qml.U3(weights[k], weights[k + 1], weights[k + 2], wires=i)
                qml.DepolarizingChannel(p1, wires=i)
                k += 3
            for i in range(n):
                qml.CNOT(wires=[i, (i + 1) % n])
                qml.QubitChannel(kraus2, wires=[i, (i + 1) % n])
        return [qml.expval(qml.PauliZ(i)) for i in range(n)]

    return pennylane_step(circuit, w, x)


def noisy_table():
    pennylane = have("pennylane")
    ours = ["density engine (EstimatorQNN)"]
    peers = ["Aer density_matrix (EstimatorQNN)"] + (["PL default.mixed"] if pennylane else [])

    def make(n, batch):
        x, w = data(n, batch)
        items = [
            ("density engine (EstimatorQNN)", lambda: density_engine(n, x, w), 1e-12),
            ("Aer density_matrix (EstimatorQNN)", lambda: aer_density(n, x, w), 1e-8),
        ]
        if pennylane:
            items.append(("PL default.mixed", lambda: pennylane_mixed(n, x, w), 1e-8))
        return items

    def memory(label, n, batch):
        if label == "PL default.mixed":
            return 3 * n * (2 + 3 * LAYERS) * batch * (16 << (2 * n))
        return batch * (16 << (2 * n)) * 8

    def scale(old, new):
        return (new[1] / old[1]) * 4.0 ** (new[0] - old[0])

    configs = [(n, ARGS.noisy_batch) for n in ARGS.noisy_qubits]
    columns, rows = run_table(
        f"Noisy layer (depolarizing {P1:g} after RY/U, {P2:g} after CX): forward + gradient",
        configs,
        make,
        "density engine (EstimatorQNN)",
        memory,
        scale,
    )
    print_table(["qubits", "batch"], columns, rows, ours, peers)


def main() -> None:
    torch.set_num_threads(ARGS.threads)
    import qiskit
    import qiskit_aer
    import qiskit_machine_learning

    versions = [f"torch {torch.__version__}", f"qiskit {qiskit.__version__}"]
    versions += [f"qiskit-aer {qiskit_aer.__version__}"]
    versions += [f"qiskit-machine-learning {qiskit_machine_learning.__version__}"]
    for name in ("pennylane", "pennylane_lightning", "torchquantum"):
        try:
            module = _import_torchquantum() if name == "torchquantum" else __import__(name)
            versions.append(f"{name} {getattr(module, '__version__', '?')}")
        except Exception:  # noqa: BLE001
            versions.append(f"{name} absent")
    cpu = platform.processor() or platform.machine()
    print(
        f"machine: {cpu}, {os.cpu_count()} logical cores; torch threads {torch.get_num_threads()}"
    )
    print("; ".join(versions))
    print(f"command: python {' '.join(sys.argv)}")
    if not ARGS.skip_exact:
        exact_tables()
    if not ARGS.skip_noisy:
        noisy_table()


if __name__ == "__main__":
    main()
