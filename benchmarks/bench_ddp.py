"""Benchmark: HQCNN training throughput (images/s) with 1 vs 2 data-parallel ranks (torchrun).

    python benchmarks/bench_ddp.py [--dataset bloodmnist] [--images 2048] [--epochs 3]

Each configuration is one ``torchrun --nproc-per-node N -m qhqcnn train`` job on the same
training images (the first ``--images`` of the split; global batch ``--batch-size``, gloo on
127.0.0.1, ``--threads`` torch threads per rank). Throughput is training images per second of the
training part of each epoch after the first (warm-up), median over epochs, from the run's
``history.json``. Rows: 1 rank × 1 thread, 1 rank × 2 threads (intra-op parallelism, for
context), 2 ranks × 1 thread with per-rank BatchNorm (the default) and with
``--sync-batchnorm``. All rows run in one invocation, one after the other.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(ranks: int, threads: int, sync: bool, args: argparse.Namespace, workdir: Path) -> dict:
    out = workdir / f"r{ranks}t{threads}{'s' if sync else ''}"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        str(ranks),
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(free_port()),
        "-m",
        "qhqcnn",
        "train",
        "--dataset",
        args.dataset,
        "--model",
        args.model,
        "--epochs",
        str(args.epochs),
        "--max-train",
        str(args.images),
        "--max-eval",
        "256",
        "--batch-size",
        str(args.batch_size),
        "--threads",
        str(threads),
        "--device",
        "cpu",
        "--no-progress",
        "--out",
        str(out),
    ] + (["--sync-batchnorm"] if sync else [])
    if args.data_dir:
        command += ["--data-dir", args.data_dir]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    history = json.loads((out / "history.json").read_text())
    later = history[1:] or history
    seconds = statistics.median(h["train_seconds"] for h in later)
    return {
        "ranks": ranks,
        "threads": threads,
        "sync": sync,
        "images_per_s": args.images / seconds,
        "epoch_train_s": seconds,
        "wall_s": wall,
        "train_loss_last": history[-1]["train_loss"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="bloodmnist")
    parser.add_argument("--model", default="hqcnn")
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--data-dir", default=os.environ.get("QHQCNN_DATA_DIR"))
    args = parser.parse_args()
    print(
        f"{args.model} on the first {args.images} {args.dataset} training images, global batch "
        f"{args.batch_size}, {args.epochs} epochs (first = warm-up), {os.cpu_count()} CPUs"
    )
    with tempfile.TemporaryDirectory() as tmp:
        configurations = [(1, 1, False), (1, 2, False), (2, 1, False), (2, 1, True)]
        rows = [run(r, t, sync, args, Path(tmp)) for r, t, sync in configurations]
    base = rows[0]["images_per_s"]
    print(f"{'configuration':<48}{'images/s':>10}{'s/epoch':>10}{'speed-up':>10}{'wall s':>9}")
    for row in rows:
        name = f"{row['ranks']} rank(s) x {row['threads']} thread(s)"
        if row["ranks"] > 1:
            name += ", global BatchNorm" if row["sync"] else ", per-rank BatchNorm"
        print(
            f"{name:<48}{row['images_per_s']:>10.1f}{row['epoch_train_s']:>10.2f}"
            f"{row['images_per_s'] / base:>9.2f}x{row['wall_s']:>9.1f}"
        )


if __name__ == "__main__":
    main()
