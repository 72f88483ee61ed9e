"""Benchmark: noisy forward + gradient of the HQCNN quantum layer at batch 64, side by side.

    python benchmarks/bench_noise.py [--device fake_torino] [--batch 64] [--qml-samples 1]

All rows evaluate the same circuit: the 4-qubit HQCNN template transpiled once to the device's
ISA and shrunk to its active physical qubits, with the device's ``NoiseModel.from_backend``
re-indexed to them (``AerBackend.prepare``). "forward+gradient" is ``EstimatorQNN.forward`` and
``EstimatorQNN.backward`` with input gradients (8 outputs × (4 inputs + 38 weights)):

* qiskit-ml ``ParamShiftEstimatorGradient`` on Aer ``EstimatorV2`` (density matrix, same noise
  model): one PUB — one Aer run — per shifted parameter set; timed on ``--qml-samples`` images
  and scaled linearly to the batch (the number of PUBs is linear in it);
* Aer ``EstimatorV2`` + ``BroadcastParamShiftGradient`` (``engine="aer"``): all shifted sets of
  the batch in ONE PUB;
* the torch density-matrix engine (``engine="density"``): exact values, adjoint gradients;
* for context, the noiseless exact statevector engine (``--backend exact``).

Then one full HQCNN training step (backbone + quantum layer + head, forward, loss, backward,
AdamW step) on a batch of real BreastMNIST images: exact vs noisy (both noisy engines), and the
quantum layer's own ``forward`` and ``backward`` on both engines.
Times are medians of ``--repeats`` runs (a single run for rows over 10 s); the quantum-layer and
the exact/density training-step rows are medians of ``--step-repeats`` runs, taking turns after
a warm-up. ``--skip-aer`` leaves out the Aer rows (minutes) for a quick check.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch
from qiskit_aer.primitives import EstimatorV2 as AerEstimator
from qiskit_machine_learning.gradients import ParamShiftEstimatorGradient
from qiskit_machine_learning.neural_networks import EstimatorQNN

from qhqcnn.backends.base import make_backend
from qhqcnn.circuits import hqcnn_template
from qhqcnn.config import ModelSpec
from qhqcnn.models import build_model
from qhqcnn.nn.quantum_layer import build_qnn


def timed(run: Callable[[], object], repeats: int) -> float:
    """Median seconds of ``run`` (one run only when the first takes more than 10 s)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
        if times[0] > 10:
            break
    return statistics.median(times)


def interleaved(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each run, after one warm-up each, the runs taking turns (so that all
    of them see the same load on a shared machine)."""
    for run in runs.values():
        run()
    times: dict[str, list[float]] = {label: [] for label in runs}
    for _ in range(repeats):
        for label, run in runs.items():
            start = time.perf_counter()
            run()
            times[label].append(time.perf_counter() - start)
    return {label: statistics.median(values) for label, values in times.items()}


def qnn_step(qnn, x: np.ndarray, w: np.ndarray) -> Callable[[], object]:
    def run():
        qnn.forward(x, w)
        qnn.backward(x, w)

    return run


def load_batch(batch: int, data_dir: str | None) -> tuple[torch.Tensor, torch.Tensor, str]:
    try:
        from qhqcnn.data.batches import images_to_tensor, labels_to_tensor
        from qhqcnn.data.medmnist import load_split

        split = load_split("breastmnist", "train", data_dir, download=False)
        images = images_to_tensor(split.images[:batch])
        labels = labels_to_tensor(split.labels[:batch], split.info.task)
        return images, labels, "BreastMNIST train images"
    except Exception:  # noqa: BLE001 - missing data: random images (timing is the same)
        generator = torch.Generator().manual_seed(0)
        images = torch.rand(batch, 1, 28, 28, generator=generator) * 2 - 1
        return images, torch.randint(0, 2, (batch,), generator=generator), "random images"


def training_step(backend, images, labels) -> Callable[[], object]:
    torch.manual_seed(0)
    model = build_model(ModelSpec(), 1, 2, backend)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()

    def run():
        model.train()
        loss = loss_fn(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return run


def _ratio(value: float) -> str:
    return f"{value:,.1f}x" if value >= 1 else f"{value:.3f}x"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="fake_torino")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--qml-samples", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-dir", default=os.environ.get("QHQCNN_DATA_DIR"))
    parser.add_argument("--step-repeats", type=int, default=10, help="training steps timed")
    parser.add_argument("--skip-aer", action="store_true", help="leave out the Aer rows")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    template = hqcnn_template()
    rng = np.random.default_rng(0)
    x = rng.uniform(-np.pi, np.pi, (args.batch, template.num_inputs))
    w = template.init_weights(rng)

    aer = make_backend("aer", noise=args.device, engine="aer")
    prepared = aer.prepare(template)
    density = make_backend("aer", noise=args.device, engine="density")
    exact = make_backend("exact")
    info = prepared.info
    print(
        f"{args.device}: layout {info['layout']}, {info['two_qubit_gates']} two-qubit gates, "
        f"depth {info['depth']}, simulated on {info['simulated_qubits']} qubits; "
        f"torch threads {torch.get_num_threads()}; load average "
        + ", ".join(f"{load:.2f}" for load in os.getloadavg())
    )

    rows: list[tuple[str, float, str]] = []
    if not args.skip_aer:
        aer_estimator = AerEstimator(
            options={
                "backend_options": {"method": "density_matrix", "noise_model": prepared.noise_model}
            }
        )
        qml = EstimatorQNN(
            circuit=prepared.circuit,
            observables=list(prepared.observables),
            input_params=list(prepared.input_params),
            weight_params=list(prepared.weight_params),
            estimator=aer_estimator,
            gradient=ParamShiftEstimatorGradient(aer_estimator),
            input_gradients=True,
            default_precision=0.0,
        )
        small = x[: args.qml_samples]
        seconds = timed(qnn_step(qml, small, w), 1) * args.batch / args.qml_samples
        rows.append(
            (
                "qiskit-ml ParamShift on Aer EstimatorV2 (one PUB per shift)",
                seconds,
                f"timed on {args.qml_samples} image(s), scaled x{args.batch / args.qml_samples:g}",
            )
        )
    engines = [("density-matrix engine, adjoint (torch)", density)]
    engines.append(("noiseless exact engine (context)", exact))
    if not args.skip_aer:
        engines.insert(0, ("Aer EstimatorV2 + broadcast param-shift (one PUB)", aer))
    layers = {}
    for label, backend in engines:
        qnn = build_qnn(backend.prepare(template))
        layers[label] = qnn
        rows.append((label, timed(qnn_step(qnn, x, w), args.repeats), "measured"))

    reference = next(seconds for label, seconds, _ in rows if label.startswith("density"))
    print(f"\nnoisy QNN forward+gradient, batch {args.batch} ({args.device} noise model)")
    print(f"| path | ms per batch of {args.batch} | ratio to density engine | how |")
    print("|---|---:|---:|---|")
    for label, seconds, how in rows:
        print(f"| {label} | {seconds * 1e3:,.0f} | {_ratio(seconds / reference)} | {how} |")

    layer_runs = {}
    for label in ("density-matrix engine, adjoint (torch)", "noiseless exact engine (context)"):
        qnn = layers[label]
        layer_runs[(label, "forward")] = lambda q=qnn: q.forward(x, w)
        layer_runs[(label, "backward")] = lambda q=qnn: q.backward(x, w)
    layer_times = interleaved(layer_runs, args.step_repeats)
    print(f"\nquantum layer alone, batch {args.batch}: EstimatorQNN forward and backward")
    print("| engine | forward ms | backward ms |")
    print("|---|---:|---:|")
    for label in ("density-matrix engine, adjoint (torch)", "noiseless exact engine (context)"):
        forward, backward = layer_times[(label, "forward")], layer_times[(label, "backward")]
        print(f"| {label} | {forward * 1e3:,.1f} | {backward * 1e3:,.1f} |")

    images, labels, source = load_batch(args.batch, args.data_dir)
    exact_label = "exact (noiseless) engine"
    step_runs = {
        exact_label: training_step(make_backend("exact"), images, labels),
        f"aer density engine, {args.device} noise": training_step(density, images, labels),
    }
    steps = interleaved(step_runs, args.step_repeats)
    if not args.skip_aer:
        label = f"aer EstimatorV2 + broadcast, {args.device} noise"
        steps[label] = timed(training_step(aer, images, labels), args.repeats)
    print(
        f"\nHQCNN training step, batch {args.batch} of {source} "
        f"(median of {args.step_repeats}, exact and density interleaved)"
    )
    print("| backend | ms per step | ratio to exact |")
    print("|---|---:|---:|")
    for label, seconds in steps.items():
        print(f"| {label} | {seconds * 1e3:,.0f} | {_ratio(seconds / steps[exact_label])} |")


if __name__ == "__main__":
    main()
