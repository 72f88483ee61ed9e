"""Benchmark: Quanv2d on a batch of 28×28 images, exact engine vs Qiskit's reference estimator.

    python benchmarks/bench_quanv.py [--batch 64] [--ref-patches 48] [--ref-grad-patches 4]

A 2×2 window with stride 2 gives 196 patches per image, so a batch of 64 is 12,544 circuit
evaluations (4 qubits, 4 observables each). Rows:

* exact engine, fixed random filter, forward (one batched evaluation; memoisation off);
* exact engine, trainable filter (24 weights), forward + backward;
* Qiskit ``StatevectorEstimator`` (+ ``ParamShiftEstimatorGradient``) through the same
  QuantumLayer seam (``--backend statevector``): forward timed on 2 images, trainable
  forward+backward on a 4×4 corner of one image (4 patches), scaled linearly to the batch;
* Qiskit ``StatevectorEstimator`` in a per-patch loop (one bound circuit per patch, the naive
  approach), forward, timed on ``--ref-patches`` patches; and the same loop plus a
  ``ParamShiftEstimatorGradient`` call per patch for the trainable filter, timed on
  ``--ref-grad-patches`` patches; both scaled linearly.

Scaled rows say so. Images are real BreastMNIST test images when the data directory has them,
else uniform random pixels (the timing does not depend on the values).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from qiskit.primitives import StatevectorEstimator
from qiskit_machine_learning.gradients import ParamShiftEstimatorGradient

from qhqcnn.backends.base import make_backend
from qhqcnn.circuits.encodings import pixel_angles
from qhqcnn.circuits.quanv import quanv_template
from qhqcnn.nn.quanv2d import Quanv2d

PIXEL_RANGE = (-1.0, 1.0)


def load_images(batch: int, data_dir: str | None) -> tuple[torch.Tensor, str]:
    """``batch`` normalised images in [−1, 1]: real BreastMNIST if present, else random."""
    try:
        from qhqcnn.data.batches import images_to_tensor
        from qhqcnn.data.medmnist import load_split

        split = load_split("breastmnist", "test", data_dir, download=False)
        return images_to_tensor(split.images[:batch]), "BreastMNIST test images"
    except Exception:  # noqa: BLE001 - any missing data falls back to random pixels
        generator = torch.Generator().manual_seed(0)
        return torch.rand(batch, 1, 28, 28, generator=generator) * 2 - 1, "random pixels"


def best_of(repeats: int, run: Callable[[], object]) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times) if repeats < 3 else statistics.median(times)


def reference_loop(layer: Quanv2d, images: torch.Tensor, count: int, gradient: bool) -> float:
    """Seconds for ``count`` patches, one StatevectorEstimator call (and gradient) per patch."""
    template = layer.template
    patches = layer.patches(images)[:count]
    angles = pixel_angles(patches.double()).numpy()
    weights = layer.quantum.weight.detach().double().numpy()
    estimator = StatevectorEstimator()
    grad = ParamShiftEstimatorGradient(estimator) if gradient else None
    observables = list(template.observables)
    start = time.perf_counter()
    for row in angles:
        values = dict(zip(template.input_params, row, strict=True))
        values.update(zip(template.weight_params, weights, strict=True))
        bound = template.circuit.assign_parameters(values)
        estimator.run([(bound, observables)]).result()
        if grad is not None:
            point = np.concatenate([row, weights])
            circuits = [template.circuit] * len(observables)
            grad.run(circuits, observables, [point] * len(observables)).result()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--ref-patches", type=int, default=48)
    parser.add_argument("--ref-grad-patches", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-dir", default=os.environ.get("QHQCNN_DATA_DIR"))
    args = parser.parse_args()

    images, source = load_images(args.batch, args.data_dir)
    exact, reference = make_backend("exact"), make_backend("statevector")
    fixed = Quanv2d(quanv_template(), exact, pixel_range=PIXEL_RANGE, memoize=False)
    trainable = Quanv2d(
        quanv_template(filter_kind="trainable"), exact, pixel_range=PIXEL_RANGE, seed=0
    )
    n_patches = fixed.patches(images).shape[0]

    def forward_backward() -> None:
        trainable.zero_grad()
        trainable(images).sum().backward()

    with torch.no_grad():
        fixed(images[:2])  # warm-up: compile the circuit once
    forward_backward()
    with torch.no_grad():
        exact_forward = best_of(args.repeats, lambda: fixed(images))
    exact_backward = best_of(args.repeats, forward_backward)
    # (method, how it was timed, seconds for the whole batch, the exact row it compares to)
    rows = [
        ("exact engine, random filter, forward", "measured", exact_forward, exact_forward),
        ("exact engine, trainable, forward+backward", "measured", exact_backward, exact_backward),
    ]
    few = images[:2]
    measured = fixed.patches(few).shape[0]
    scale, how = n_patches / measured, f"scaled from {measured} patches"
    seam = Quanv2d(quanv_template(), reference, pixel_range=PIXEL_RANGE, memoize=False)
    with torch.no_grad():
        seconds = best_of(1, lambda: seam(few))
    rows.append(("statevector backend (same seam), forward", how, seconds * scale, exact_forward))
    # parameter-shift gradients cost seconds per patch: time one 4x4 corner (4 patches)
    corner = images[:1, :, :4, :4]
    measured = fixed.patches(corner).shape[0]
    seam = Quanv2d(quanv_template(filter_kind="trainable"), reference, pixel_range=PIXEL_RANGE)
    seconds = best_of(1, lambda: seam(corner).sum().backward()) * n_patches / measured
    how = f"scaled from {measured} patches"
    rows.append(("statevector backend, trainable, fwd+bwd", how, seconds, exact_backward))

    for gradient, count in ((False, args.ref_patches), (True, args.ref_grad_patches)):
        count = min(count, n_patches)
        layer = trainable if gradient else fixed
        seconds = reference_loop(layer, images, count, gradient) * n_patches / count
        label = "Qiskit per-patch loop, " + ("trainable, fwd+grads" if gradient else "random, fwd")
        baseline = exact_backward if gradient else exact_forward
        rows.append((label, f"scaled from {count} patches", seconds, baseline))

    print(
        f"Quanv2d 2x2/stride 2 on {args.batch} x 28x28 ({source}): {n_patches:,} patch "
        f"circuits (4 qubits, 4 observables); torch threads {torch.get_num_threads()}"
    )
    header = f"{'method':<46}{'timing':<25}{'seconds':>11}{'us/patch':>12}{'vs exact':>10}"
    print(header)
    print("-" * len(header))
    for label, timing, seconds, baseline in rows:
        print(
            f"{label:<46}{timing:<25}{seconds:>11.3f}{1e6 * seconds / n_patches:>12.1f}"
            f"{seconds / baseline:>9.0f}x"
        )


if __name__ == "__main__":
    main()
