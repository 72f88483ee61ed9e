"""Run by ``torchrun`` in tests/test_distributed.py: one rank of a short DDP training run.

Usage: ``torchrun --nproc-per-node N tests/workers/ddp_rank.py CONFIG_JSON OUT_DIR DATA_DIR
[MODE]``, MODE ``fit`` (default), ``interrupt`` (Ctrl-C at the start of epoch 2, as a user would)
or ``resume`` (continue the run in OUT_DIR/run). Each rank saves its own final weights to
``OUT_DIR/rank<r>.pt`` (the Trainer itself writes only from rank 0), so the test can check that
every rank ends with the same model.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from qhqcnn.config import TrainConfig
from qhqcnn.training.distributed import barrier, shutdown
from qhqcnn.training.trainer import Trainer


def main() -> None:
    config_path, out_dir, data_dir = sys.argv[1:4]
    mode = sys.argv[4] if len(sys.argv) > 4 else "fit"
    run = Path(out_dir) / "run"
    if mode == "resume":
        trainer = Trainer.resume(run, data_dir=data_dir, progress=False)
    else:
        config = TrainConfig.from_dict(json.loads(Path(config_path).read_text()))
        trainer = Trainer(config, run, data_dir=data_dir, progress=False)
    if mode == "interrupt":
        train_epoch = trainer._train_epoch

        def stop_at_epoch_2(epoch: int):
            if epoch == 2:
                raise KeyboardInterrupt
            return train_epoch(epoch)

        trainer._train_epoch = stop_at_epoch_2
        try:
            trainer.fit()
        except KeyboardInterrupt:
            barrier(trainer.context)
            shutdown(trainer.context)
            return
    trainer.fit()
    rank = trainer.context.rank
    torch.save(trainer.model.state_dict(), Path(out_dir) / f"rank{rank}.pt")
    barrier(trainer.context)
    shutdown(trainer.context)


if __name__ == "__main__":
    main()
