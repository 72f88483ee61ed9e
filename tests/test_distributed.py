"""Data-parallel training: rank sharding, the CPU BatchNorm all-reduce, and 2 ranks by torchrun."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

from qhqcnn.config import ModelSpec, TrainConfig
from qhqcnn.data.batches import epoch_generator, epoch_order, train_batches
from qhqcnn.training.distributed import AllReduceBatchNorm, convert_batchnorm, shard
from qhqcnn.training.trainer import Trainer

WORKER = Path(__file__).parent / "workers" / "ddp_rank.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_single_process_order_is_the_samplers_permutation():
    for n, seed, epoch in [(546, 0, 1), (97, 3, 12)]:
        expected = torch.randperm(n, generator=epoch_generator(seed, epoch)).tolist()
        assert epoch_order(n, seed, epoch) == expected


@pytest.mark.parametrize("augment", ["none", "flip"])
def test_rank_batches_are_the_single_process_batches_split(augment):
    images = torch.randn(40, 1, 4, 4)
    labels = torch.arange(40)
    single = list(train_batches(images, labels, 8, 5, 3, augment=augment))
    ranks = [
        list(train_batches(images, labels, 8, 5, 3, augment=augment, rank=r, world_size=2))
        for r in range(2)
    ]
    assert len(ranks[0]) == len(ranks[1]) == len(single)
    for k, (batch, batch_labels) in enumerate(single):
        for r in range(2):
            torch.testing.assert_close(ranks[r][k][0], batch[r::2], rtol=0, atol=0)
            assert torch.equal(ranks[r][k][1], batch_labels[r::2])


def test_batch_size_must_split_evenly_across_ranks():
    with pytest.raises(ValueError, match="divisible"):
        next(train_batches(torch.zeros(8, 1, 2, 2), torch.zeros(8), 5, 0, 1, world_size=2))


def test_shards_cover_every_row_once():
    from qhqcnn.training.distributed import DistributedContext

    for n in (0, 1, 7, 40):
        rows = []
        for r in range(3):
            part = shard(n, DistributedContext(rank=r, world_size=3))
            rows += list(range(n))[part]
        assert rows == list(range(n))


@pytest.fixture
def single_rank_group():
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1
    )
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("shape", [(16, 3), (8, 4, 5, 5)])
def test_allreduce_batchnorm_equals_batchnorm(single_rank_group, shape):
    torch.manual_seed(0)
    reference = nn.BatchNorm1d(shape[1]) if len(shape) == 2 else nn.BatchNorm2d(shape[1])
    with torch.no_grad():
        reference.weight.uniform_(0.5, 1.5)
        reference.bias.uniform_(-1, 1)
    synced = convert_batchnorm(nn.Sequential(reference), torch.device("cpu"))[0]
    assert isinstance(synced, AllReduceBatchNorm)
    x = torch.randn(*shape, dtype=torch.float64) * 3 + 1
    reference, synced = reference.double(), synced.double()  # compare at float64 precision
    for _ in range(2):  # running statistics after two updates
        a = x.clone().requires_grad_(True)
        b = x.clone().requires_grad_(True)
        out_a, out_b = reference(a), synced(b)
        torch.testing.assert_close(out_b, out_a, rtol=1e-12, atol=1e-12)
        weights = torch.randn_like(out_a)
        (out_a * weights).sum().backward()
        (out_b * weights).sum().backward()
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(synced.weight.grad, reference.weight.grad, rtol=1e-10, atol=1e-12)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(synced, name), getattr(reference, name))
    assert set(synced.state_dict()) == set(reference.state_dict())
    synced.eval(), reference.eval()
    torch.testing.assert_close(synced(x), reference(x))


def _short_config(**changes) -> TrainConfig:
    values = dict(
        dataset="breastmnist",
        model=ModelSpec(model="hqcnn", dropout=0.0),
        epochs=1,
        batch_size=16,
        max_train=64,
        max_eval=40,
        threads=1,
        device="cpu",
        sync_batchnorm=True,
    )
    values.update(changes)
    return TrainConfig(**values)


def _torchrun(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(free_port()),
        *args,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_two_ranks_agree_and_match_a_single_process_run(tmp_path, breast_dir):
    config = _short_config()
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config.to_dict()))
    _torchrun([str(WORKER), str(config_path), str(tmp_path / "ddp"), breast_dir], tmp_path)

    rank0 = torch.load(tmp_path / "ddp" / "rank0.pt")
    rank1 = torch.load(tmp_path / "ddp" / "rank1.pt")
    for key in rank0:  # DDP keeps every rank's replica identical, circuit weights included
        assert torch.equal(rank0[key], rank1[key]), key
    assert "head.connector.weight" in rank0

    single = Trainer(config, tmp_path / "single", data_dir=breast_dir, progress=False)
    single.fit()
    ddp_run = tmp_path / "ddp" / "run"
    ddp_history = json.loads((ddp_run / "history.json").read_text())
    record = json.loads((ddp_run / "config.json").read_text())
    assert record["execution"]["world_size"] == 2
    assert record["execution"]["backend"] == "gloo"
    (expected,) = single.history
    (got,) = ddp_history
    # The same global batches, flips and synchronised BatchNorm: the same training loss up to
    # float summation order; validation after one AdamW epoch to a loose tolerance (Adam turns
    # round-off in near-zero gradients, e.g. of biases before BatchNorm, into lr-sized steps).
    assert got["train_loss"] == pytest.approx(expected["train_loss"], rel=1e-5)
    assert got["train_acc"] == pytest.approx(expected["train_acc"])
    assert got["val_loss"] == pytest.approx(expected["val_loss"], abs=5e-3)
    assert got["val_acc"] == pytest.approx(expected["val_acc"], abs=0.05)
    # (a tensorboard/ folder appears where the tensorboard package is installed)
    assert sorted(p.name for p in ddp_run.iterdir() if p.name != "tensorboard") == [
        "best.pt",
        "config.json",
        "history.csv",
        "history.json",
        "last.pt",
    ]


def test_two_ranks_resume_after_an_interrupt_as_if_uninterrupted(tmp_path, breast_dir):
    config = _short_config(epochs=2, sync_batchnorm=False, model=ModelSpec(dropout=0.3))
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config.to_dict()))
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    _torchrun([str(WORKER), str(config_path), str(straight), breast_dir], tmp_path)
    _torchrun([str(WORKER), str(config_path), str(broken), breast_dir, "interrupt"], tmp_path)
    assert json.loads((broken / "run" / "history.json").read_text())[-1]["epoch"] == 1
    _torchrun([str(WORKER), str(config_path), str(broken), breast_dir, "resume"], tmp_path)
    for rank in (0, 1):
        expected = torch.load(straight / f"rank{rank}.pt")
        got = torch.load(broken / f"rank{rank}.pt")
        for key in expected:
            assert torch.equal(got[key], expected[key]), (rank, key)


def test_torchrun_cli_writes_once_and_evaluates(tmp_path, breast_dir):
    out = tmp_path / "run"
    done = _torchrun(
        [
            "-m",
            "qhqcnn",
            "train",
            "--dataset",
            "breastmnist",
            "--epochs",
            "1",
            "--max-train",
            "48",
            "--max-eval",
            "40",
            "--batch-size",
            "16",
            "--threads",
            "1",
            "--device",
            "cpu",
            "--no-progress",
            "--out",
            str(out),
            "--data-dir",
            breast_dir,
        ],
        tmp_path,
    )
    assert done.stdout.count("best validation AUC") == 1
    assert "2 ranks (gloo)" in done.stdout
    assert (out / "metrics_test.json").exists()
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1]
