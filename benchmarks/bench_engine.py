"""Benchmark the fast exact engine against qiskit-machine-learning's default path.

Usage::

    python benchmarks/bench_engine.py [--quick] [--threads 1] [--ref-batch 1] [--skip-reference]

Prints side-by-side tables (medians of repeats; every ratio comes from the same run):

1. the quantum layer (``EstimatorQNN`` wrapped in ``TorchConnector``), forward + backward on a
   batch of 64, on the 4-qubit HQCNN-like template with 8 observables: qml defaults vs this
   engine (plus PennyLane columns when PennyLane is installed);
2. scaling of this engine with the batch size (4 qubits) and with the number of qubits (batch 64).

Wall-clock times depend on what else runs on the machine: the CPU time of this process and the
load average are printed next to them.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, smaller sweeps")
    parser.add_argument("--threads", type=int, default=None, help="torch/BLAS threads")
    parser.add_argument(
        "--ref-batch", type=int, default=1, help="batch timed for the qml default path (scaled)"
    )
    parser.add_argument("--skip-reference", action="store_true", help="do not time qml defaults")
    return parser.parse_args()


ARGS = _parse() if __name__ == "__main__" else None
if ARGS is not None and ARGS.threads:
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)

import numpy as np  # noqa: E402
import qiskit  # noqa: E402
import qiskit_machine_learning  # noqa: E402
import torch  # noqa: E402
from qiskit.quantum_info import SparsePauliOp  # noqa: E402
from qiskit_machine_learning.connectors import TorchConnector  # noqa: E402
from qiskit_machine_learning.neural_networks import EstimatorQNN  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from qhqcnn.circuits import hqcnn_template as shipped_hqcnn_template  # noqa: E402
from qhqcnn.engine import FastEstimator, FastEstimatorGradient  # noqa: E402

BATCH = 64


# ----------------------------------------------------------------------------- circuits
def hqcnn_template(num_qubits: int = 4, layers: int = 2):
    """The shipped HQCNN circuit (``qhqcnn.circuits.hqcnn_template``): circuit, inputs, weights."""
    template = shipped_hqcnn_template(num_qubits, layers)
    return template.circuit, list(template.input_params), list(template.weight_params)


def observables(num_qubits: int, measured: int = 4) -> list[SparsePauliOp]:
    """Z_i and X_i on the first ``measured`` qubits (8 outputs)."""
    return [
        SparsePauliOp.from_sparse_list([(p, [i], 1.0)], num_qubits)
        for p in "ZX"
        for i in range(min(measured, num_qubits))
    ]


# ----------------------------------------------------------------------------- timing
def time_steps(step, repeats: int, warmup: int = 2) -> tuple[float, float]:
    """Median wall and CPU seconds of ``step(i)``."""
    for i in range(warmup):
        step(-1 - i)
    walls, cpus = [], []
    for i in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        step(i)
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus)


def layer_step(model: TorchConnector, num_inputs: int, batch: int, seed: int = 0):
    """A training-like step: fresh inputs, forward, backward, weights nudged (no cache reuse)."""
    rng = np.random.default_rng(seed)
    batches = [
        torch.tensor(rng.uniform(0, np.pi, (batch, num_inputs)), dtype=torch.float32)
        for _ in range(8)
    ]

    def step(i: int) -> None:
        x = batches[i % len(batches)].clone().requires_grad_(True)
        model(x).sum().backward()
        with torch.no_grad():
            model.weight.add_(1e-3)
            model.weight.grad = None

    return step


def make_layer(num_qubits: int, fast: bool, layers: int = 2) -> TorchConnector:
    qc, x, w = hqcnn_template(num_qubits, layers)
    kwargs = {}
    if fast:
        kwargs = dict(
            estimator=FastEstimator(),
            gradient=FastEstimatorGradient(FastEstimator()),
            default_precision=0.0,
        )
    qnn = EstimatorQNN(
        circuit=qc,
        observables=observables(num_qubits),
        input_params=x,
        weight_params=w,
        input_gradients=True,
        **kwargs,
    )
    weights = np.random.default_rng(1).uniform(-np.pi, np.pi, len(w))
    return TorchConnector(qnn, initial_weights=weights)


def cost_breakdown(repeats: int) -> list[list[str]]:
    """CPU time of the engine's simulator, its qiskit-facing wrappers, and the rest (qml)."""
    model = make_layer(4, True)
    qnn = model.neural_network
    spent: dict[str, float] = {}

    def timed(owner, name: str, label: str) -> None:
        inner = getattr(owner, name)

        def wrapper(*args, **kwargs):
            start = time.process_time()
            try:
                return inner(*args, **kwargs)
            finally:
                spent[label] = spent.get(label, 0.0) + time.process_time() - start

        setattr(owner, name, wrapper)

    timed(qnn.estimator, "run", "estimator")
    timed(qnn.gradient, "run", "gradient")
    timed(qnn.estimator.simulator, "run", "sim_forward")
    timed(qnn.gradient._simulator, "run", "sim_gradient")
    step = layer_step(model, 4, BATCH, seed=7)
    for i in range(3):
        step(-1 - i)
    spent.clear()
    start = time.process_time()
    for i in range(repeats):
        step(i)
    total = (time.process_time() - start) / repeats
    part = {k: v / repeats for k, v in spent.items()}
    rows = [
        ["simulator, forward (gates, states, values)", part["sim_forward"]],
        ["simulator, adjoint gradients (forward reused from the cache)", part["sim_gradient"]],
        [
            "FastEstimator wrapper (PUB coercion, grouping, results)",
            part["estimator"] - part["sim_forward"],
        ],
        [
            "FastEstimatorGradient wrapper (validation, grouping, results)",
            part["gradient"] - part["sim_gradient"],
        ],
        [
            "EstimatorQNN + TorchConnector (outside our objects)",
            total - part["estimator"] - part["gradient"],
        ],
        ["total", total],
    ]
    return [[label, f"{seconds * 1e3:.2f}"] for label, seconds in rows]


# ----------------------------------------------------------------------------- report
def machine_info() -> list[str]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return [
        f"CPU: {cpu}; logical cores: {os.cpu_count()}; load average (1/5/15 min): {load}",
        f"torch threads: {torch.get_num_threads()}; Python {platform.python_version()}",
        f"torch {torch.__version__}, qiskit {qiskit.__version__}, "
        f"qiskit-machine-learning {qiskit_machine_learning.__version__}, numpy {np.__version__}",
    ]


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = [
        "| "
        + " | ".join(
            c.ljust(w) if k == 0 else c.rjust(w)
            for k, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        + " |"
        for r in rows
    ]
    return "\n".join([line, rule, *body])


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.2f}" if seconds < 10 else f"{seconds * 1e3:,.0f}"


def pennylane_columns(repeats: int) -> list[list[str]]:
    """PennyLane default.qubit (backprop) and lightning.qubit (adjoint), if installed."""
    try:
        import pennylane as qml
    except ImportError:
        return []
    rows = []
    n = 4
    for device, method in (("default.qubit", "backprop"), ("lightning.qubit", "adjoint")):
        try:
            dev = qml.device(device, wires=n)
        except Exception:  # noqa: BLE001 - plugin missing
            continue

        @qml.qnode(dev, interface="torch", diff_method=method)
        def circuit(inputs, weights):
            k = 0
            for i in range(n):
                qml.RY(inputs[..., i], wires=i)
            for _ in range(3):
                for i in range(n):
                    qml.U3(weights[k], weights[k + 1], weights[k + 2], wires=i)
                    k += 3
                for i in range(n):
                    qml.CNOT(wires=[i, (i + 1) % n])
            for i in range(n - 1):
                qml.Hadamard(wires=i)
                qml.ControlledPhaseShift(weights[k], wires=[i, i + 1])
                k += 1
            qml.Toffoli(wires=[0, 1, 2])
            qml.Toffoli(wires=[1, 2, 3])
            for i in range(n):
                qml.RY(weights[k], wires=i)
                qml.RZ(weights[k + 1], wires=i)
                k += 2
            return [qml.expval(qml.PauliZ(i)) for i in range(n)] + [
                qml.expval(qml.PauliX(i)) for i in range(n)
            ]

        layer = qml.qnn.TorchLayer(circuit, {"weights": 3 * 3 * n + (n - 1) + 2 * n})
        rng = np.random.default_rng(0)
        data = [torch.tensor(rng.uniform(0, np.pi, (BATCH, n)), dtype=torch.float32)]

        def step(i: int, layer=layer, data=data) -> None:
            x = data[0].clone().requires_grad_(True)
            layer(x).sum().backward()

        wall, cpu = time_steps(step, max(3, repeats // 5))
        rows.append([f"PennyLane {device} ({method}, TorchLayer)", ms(wall), ms(cpu)])
    return rows


def main() -> None:
    args = ARGS
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = 15 if args.quick else 50
    print("# Fast exact engine benchmark\n")
    print("\n".join(machine_info()))

    # 1. the quantum layer at batch 64 --------------------------------------------------------
    fast_wall, fast_cpu = time_steps(layer_step(make_layer(4, True), 4, BATCH), repeats)
    rows = []
    ratio_note = ""
    if not args.skip_reference:
        ref_batch = max(1, args.ref_batch)
        ref_wall, ref_cpu = time_steps(
            layer_step(make_layer(4, False), 4, ref_batch), repeats=1, warmup=0
        )
        scale = BATCH / ref_batch
        rows.append(
            [
                f"qiskit-ml defaults (batch {ref_batch} timed, x{scale:g} scaled)",
                ms(ref_wall * scale),
                ms(ref_cpu * scale),
                f"{BATCH / (ref_wall * scale):,.4f}",
                "1",
            ]
        )
        ratio_note = f"{ref_wall * scale / fast_wall:,.0f}"
    rows.append(
        [
            "this engine: FastEstimator + FastEstimatorGradient",
            ms(fast_wall),
            ms(fast_cpu),
            f"{BATCH / fast_wall:,.0f}",
            ratio_note or "-",
        ]
    )
    pennylane_rows = pennylane_columns(repeats)
    for label, wall, cpu in pennylane_rows:
        rows.append([label, wall, cpu, f"{BATCH / (float(wall.replace(',', '')) / 1e3):,.0f}", "-"])
    print(
        "\n## 1. Quantum layer forward+backward via TorchConnector, batch 64, "
        f"4-qubit HQCNN template ({make_layer(4, True).neural_network.num_weights + 4} "
        "parameters, 8 observables)\n"
    )
    headers = ["path", "wall ms / batch", "CPU ms / batch", "images/s (wall)", "speed-up"]
    print(table(headers, rows))
    if not pennylane_rows:
        print("\n(PennyLane is not installed here: its columns are omitted.)")

    print("\n### Where the time of one step goes (CPU ms per batch of 64, this engine)\n")
    print(table(["part", "CPU ms"], cost_breakdown(repeats)))

    # 2. scaling ------------------------------------------------------------------------------
    batches = [64, 256, 1024] if args.quick else [64, 128, 256, 512, 1024, 2048, 4096]
    rows = []
    model = make_layer(4, True)
    for batch in batches:
        reps = max(3, repeats // max(1, batch // 256))
        wall, cpu = time_steps(layer_step(model, 4, batch, seed=batch), reps)
        rows.append([str(batch), ms(wall), ms(cpu), f"{batch / wall:,.0f}"])
    print("\n## 2a. Batch scaling, 4 qubits (forward+backward via TorchConnector)\n")
    print(table(["batch", "wall ms", "CPU ms", "images/s (wall)"], rows))

    qubits = [4, 6, 8, 10] if args.quick else [4, 6, 8, 10, 12, 14]
    rows = []
    for n in qubits:
        model = make_layer(n, True)
        reps = 3 if n >= 12 else max(3, repeats // 3)
        wall, cpu = time_steps(layer_step(model, n, BATCH, seed=n), reps, warmup=1)
        params = model.neural_network.num_weights + n
        rows.append([str(n), str(params), ms(wall), ms(cpu), f"{BATCH / wall:,.0f}"])
    print(
        "\n## 2b. Qubit scaling, batch 64, same template structure, 8 observables "
        "(Z_i, X_i on qubits 0-3)\n"
    )
    print(table(["qubits", "parameters", "wall ms", "CPU ms", "images/s (wall)"], rows))


if __name__ == "__main__":
    main()
