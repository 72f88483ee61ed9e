"""One full training step (forward, loss, backward, AdamW step) of HQCNN vs its classical ablation.

    python benchmarks/bench_training_step.py [--batch 64] [--repeats 30] [--threads 1]
        [--backends exact statevector]

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

    def step() -> float:
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(images), labels).backward()
        optimizer.step()
        return time.perf_counter() - started

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--reference-batch",
        type=int,
        default=2,
        help="batch timed for the statevector reference row (scaled)",
    )
    parser.add_argument("--skip-reference", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    classical = build_model(ModelSpec(model="classical"), 1, 2)
    hqcnn = build_model(ModelSpec(), 1, 2, make_backend("exact"))
    steps = {"classical": make_step(classical, args.batch), "hqcnn": make_step(hqcnn, args.batch)}
    for step in steps.values():  # warm-up: compilation caches, allocator
        for _ in range(3):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.repeats):
        for name, step in steps.items():
            times[name].append(step())
    median = {name: statistics.median(t) for name, t in times.items()}

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch threads {args.threads}, load average {os.getloadavg()[0]:.2f}, "
        f"torch {torch.__version__}"
    )
    print(f"one training step, batch {args.batch}, median of {args.repeats} (interleaved)\n")
    header = f"{'model':<46}{'params (classical/quantum)':>28}{'ms / step':>12}{'vs classical':>14}"
    print(header)
    print("-" * len(header))
    for name, model in (("classical", classical), ("hqcnn", hqcnn)):
        counts = parameter_counts(model)
        label = (
            "classical ablation (tanh Linear 4→8)"
            if name == "classical"
            else "HQCNN, exact engine (EstimatorQNN+TorchConnector)"
        )
        print(
            f"{label:<46}{counts['classical']:>18,} / {counts['quantum']:<7}"
            f"{median[name] * 1e3:>12.1f}{median[name] / median['classical']:>13.2f}x"
        )
    if not args.skip_reference:
        reference = build_model(ModelSpec(), 1, 2, make_backend("statevector"))
        ref_step = make_step(reference, args.reference_batch)
        seconds = ref_step() * args.batch / args.reference_batch
        label = f"HQCNN, Qiskit reference (scaled from {args.reference_batch})"
        print(
            f"{label:<46}{'same':>28}{seconds * 1e3:>12.0f}{seconds / median['classical']:>13.0f}x"
        )


if __name__ == "__main__":
    main()
