"""One full training step (forward, loss, backward, AdamW step) of HQCNN vs its classical ablation.

    python benchmarks/bench_training_step.py [--batch 64] [--repeats 30] [--threads 1]
        [--qubits 4] [--skip-reference]

Both models are the package's own (`qhqcnn.models.hqcnn.build_model`), on a batch of 28×28
grey images,
with the HQCNN's quantum layer going through EstimatorQNN + TorchConnector exactly as in
training. The rows are interleaved (A, B, A, B, ...) so both see the same machine load; medians
and the HQCNN / classical ratio come from the same run. The ``statevector`` row (Qiskit's
reference estimator + parameter-shift gradients) is timed on a small batch and scaled linearly.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from qhqcnn.backends.base import make_backend
from qhqcnn.config import ModelSpec
from qhqcnn.models import build_model, parameter_counts


def make_step(model: torch.nn.Module, batch: int, channels: int = 1):
    images = torch.randn(batch, channels, 28, 28, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 2, (batch,), generator=torch.Generator().manual_seed(1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()

    def step() -> tuple[float, float]:
        started, started_cpu = time.perf_counter(), time.process_time()
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(images), labels).backward()
        optimizer.step()
        return time.perf_counter() - started, time.process_time() - started_cpu

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--qubits", type=int, default=4, help="qubits of both models")
    parser.add_argument(
        "--reference-batch",
        type=int,
        default=2,
        help="batch timed for the statevector reference row (scaled)",
    )
    parser.add_argument("--skip-reference", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    classical = build_model(ModelSpec(model="classical", num_qubits=args.qubits), 1, 2)
    hqcnn = build_model(ModelSpec(num_qubits=args.qubits), 1, 2, make_backend("exact"))
    # The same model with the engine as a native autograd function (one vector-Jacobian product
    # per backward instead of TorchConnector's full Jacobian): --backend-option native=true.
    native_backend = make_backend("exact", native=True)
    native = build_model(ModelSpec(num_qubits=args.qubits), 1, 2, native_backend)
    models = {"classical": classical, "hqcnn": hqcnn, "hqcnn-native": native}
    steps = {name: make_step(model, args.batch) for name, model in models.items()}
    for step in steps.values():  # warm-up: compilation caches, allocator
        for _ in range(3):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    cpu_times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.repeats):
        for name, step in steps.items():
            wall, cpu = step()
            times[name].append(wall)
            cpu_times[name].append(cpu)
    median = {name: statistics.median(t) for name, t in times.items()}
    cpu = {name: statistics.median(t) for name, t in cpu_times.items()}

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch threads {args.threads}, load average {os.getloadavg()[0]:.2f}, "
        f"torch {torch.__version__}"
    )
    print(
        f"one training step, batch {args.batch}, {args.qubits} qubits, "
        f"median of {args.repeats} (interleaved)\n"
    )
    header = (
        f"{'model':<46}{'params (classical/quantum)':>28}{'ms / step':>12}{'vs classical':>14}"
        f"{'CPU ms':>10}{'CPU vs classical':>18}"
    )
    print(header)
    print("-" * len(header))
    labels = {
        "classical": f"classical ablation (tanh Linear, {args.qubits} qubits' sizes)",
        "hqcnn": "HQCNN, exact engine (EstimatorQNN+TorchConnector)",
        "hqcnn-native": "HQCNN, exact engine (native=true)",
    }
    for name, model in models.items():
        counts = parameter_counts(model)
        label = labels[name]
        print(
            f"{label:<46}{counts['classical']:>18,} / {counts['quantum']:<7}"
            f"{median[name] * 1e3:>12.1f}{median[name] / median['classical']:>13.2f}x"
            f"{cpu[name] * 1e3:>10.1f}{cpu[name] / cpu['classical']:>17.2f}x"
        )
    if not args.skip_reference:
        reference = build_model(
            ModelSpec(num_qubits=args.qubits), 1, 2, make_backend("statevector")
        )
        ref_step = make_step(reference, args.reference_batch)
        seconds = ref_step()[0] * args.batch / args.reference_batch
        label = f"HQCNN, Qiskit reference (scaled from {args.reference_batch})"
        print(
            f"{label:<46}{'same':>28}{seconds * 1e3:>12.0f}{seconds / median['classical']:>13.0f}x"
        )


if __name__ == "__main__":
    main()
