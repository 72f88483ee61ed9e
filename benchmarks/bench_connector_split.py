"""Where one ``EstimatorQNN`` + ``TorchConnector`` step of the issue-#16 layer spends its CPU time.

Usage::

    python benchmarks/bench_connector_split.py [--qubits 4] [--batch 64] [--steps 300]

The step is the ``engine TorchConnector`` column of ``bench_peers.py`` (forward + backward of
``outputs.sum()``, the forward-trace cache cleared before each step). Process CPU time
(``time.process_time``, one torch thread) is accumulated inside ``FastEstimator.run``,
``FastEstimatorGradient.run`` and, within them, ``StatevectorSimulator.run`` (the simulation);
the rest of the step is qiskit-machine-learning's ``TorchConnector`` / ``EstimatorQNN`` code and
torch autograd, which this package does not own. The timers add a few microseconds per call.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--qubits", type=int, default=4)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    return parser.parse_args()


def main() -> None:
    args = _parse()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.argv = sys.argv[:1]  # bench_peers parses its own flags only when run as a script
    import bench_peers

    from qhqcnn.engine import estimator, gradient, statevector

    totals = {"estimator": 0.0, "gradient": 0.0, "sim:estimator": 0.0, "sim:gradient": 0.0}
    callers: list[str] = []

    def timed(owner, name: str, key: str) -> None:
        original = getattr(owner, name)

        def wrapper(*a, **k):
            callers.append(key)
            start = time.process_time()
            try:
                return original(*a, **k)
            finally:
                callers.pop()
                if key == "sim":
                    key_in = f"sim:{callers[-1]}" if callers else "sim:other"
                    totals[key_in] = totals.get(key_in, 0.0) + time.process_time() - start
                else:
                    totals[key] += time.process_time() - start

        setattr(owner, name, wrapper)

    timed(estimator.FastEstimator, "run", "estimator")
    timed(gradient.FastEstimatorGradient, "run", "gradient")
    timed(statevector.StatevectorSimulator, "run", "sim")
    x, w = bench_peers.data(args.qubits, args.batch)
    step = bench_peers.engine_connector(args.qubits, x, w)
    for _ in range(args.warmup):
        step()
    for key in totals:
        totals[key] = 0.0
    start = time.process_time()
    for _ in range(args.steps):
        step()
    total = (time.process_time() - start) / args.steps * 1e3
    per = {key: value / args.steps * 1e3 for key, value in totals.items()}
    simulation = per["sim:estimator"] + per["sim:gradient"]
    wrappers = per["estimator"] + per["gradient"] - simulation
    print(f"command: python {' '.join([Path(__file__).name] + sys.argv[1:])}")
    print(
        f"{args.qubits} qubits, batch {args.batch}, {args.steps} steps; load average "
        + ", ".join(f"{v:.2f}" for v in os.getloadavg())
    )
    print(f"CPU ms per step:           {total:6.2f}")
    print(
        f"  simulation (engine)      {simulation:6.2f}  (forward {per['sim:estimator']:.2f}, "
        f"gradient {per['sim:gradient']:.2f})"
    )
    print(
        f"  our wrappers             {wrappers:6.2f}  (FastEstimator.run, "
        "FastEstimatorGradient.run outside the simulation)"
    )
    print(
        f"  qiskit-ml + autograd     {total - per['estimator'] - per['gradient']:6.2f}  "
        "(TorchConnector, EstimatorQNN, torch: not this package's code)"
    )


if __name__ == "__main__":
    main()
