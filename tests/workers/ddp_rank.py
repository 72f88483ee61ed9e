"""Run by ``torchrun`` in tests/test_distributed.py: one rank of a short DDP training run.

Usage: ``torchrun --nproc-per-node N tests/workers/ddp_rank.py CONFIG_JSON OUT_DIR DATA_DIR``.
Each rank saves its own final weights to ``OUT_DIR/rank<r>.pt`` (the Trainer itself writes only
from rank 0), so the test can check that every rank ends with the same model.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from qhqcnn.config import TrainConfig
from qhqcnn.distributed import barrier, shutdown
from qhqcnn.train import Trainer


def main() -> None:
    config_path, out_dir, data_dir = sys.argv[1:4]
    config = TrainConfig.from_dict(json.loads(Path(config_path).read_text()))
    trainer = Trainer(config, Path(out_dir) / "run", data_dir=data_dir, progress=False)
    trainer.fit()
    rank = trainer.context.rank
    torch.save(trainer.model.state_dict(), Path(out_dir) / f"rank{rank}.pt")
    barrier(trainer.context)
    shutdown(trainer.context)


if __name__ == "__main__":
    main()
