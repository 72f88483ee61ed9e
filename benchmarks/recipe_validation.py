"""Training-recipe exploration on the VALIDATION split only (the test split is never read).

    python benchmarks/recipe_validation.py [--dataset breastmnist] [--seeds 0 1] [--epochs 30]
        [--patience N] [--variants base qlr1e-2 ...] [--out runs/recipe]
        [--table runs/recipe/table.md]

Each variant trains its model for ``--epochs`` epochs (early stopping off unless ``--patience``
is given) and reports the best validation AUC per seed. The table is printed and written to
``--table``. The QCNN pair's learning-rate table of docs/recipe.md is
``--variants qcnn-lr1e-3 … qcnn-classical-lr1e-1 --seeds 0 1 2 --epochs 40 --patience 15``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from qhqcnn.config import ModelSpec, TrainConfig
from qhqcnn.io.files import atomic_write_text
from qhqcnn.training.trainer import Trainer

#: name -> (model, TrainConfig overrides, ModelSpec overrides)
VARIANTS: dict[str, tuple[str, dict, dict]] = {
    "nobn": ("hqcnn", {"quantum_lr": None}, {"bridge_norm": False}),
    "nobn-classical": ("classical", {}, {"bridge_norm": False}),
    "base": ("hqcnn", {"quantum_lr": None}, {}),
    "classical": ("classical", {}, {}),
    "qlr1e-2": ("hqcnn", {"quantum_lr": 1e-2}, {}),
    "qlr3e-2": ("hqcnn", {"quantum_lr": 3e-2}, {}),
    "noatt": ("hqcnn", {"quantum_lr": None}, {"attention": False}),
    "qlr1e-2-noatt": ("hqcnn", {"quantum_lr": 1e-2}, {"attention": False}),
}
#: The QCNN pair's learning-rate sweep (run only when named in ``--variants``).
QCNN_LR_VARIANTS = {
    f"{model}-lr{name}": (model, {"lr": lr}, {})
    for model in ("qcnn", "qcnn-classical")
    for name, lr in (("1e-3", 1e-3), ("3e-3", 3e-3), ("1e-2", 1e-2), ("3e-2", 3e-2),
                     ("1e-1", 1e-1))
}


def run_variant(name: str, seed: int, args: argparse.Namespace) -> dict:
    model, config_overrides, spec_overrides = {**VARIANTS, **QCNN_LR_VARIANTS}[name]
    config = TrainConfig(
        dataset=args.dataset, epochs=args.epochs, patience=args.patience or args.epochs, seed=seed,
        threads=args.threads, model=ModelSpec(model=model, **spec_overrides), **config_overrides,
    )
    started = time.time()
    trainer = Trainer(config, Path(args.out) / f"{name}-s{seed}", data_dir=args.data_dir,
                      progress=False)
    best = trainer.fit()
    return {"variant": name, "seed": seed, "best_val_auc": best["best_val_auc"],
            "best_epoch": best["best_epoch"], "seconds": time.time() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="breastmnist")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--patience", type=int, default=None, help="default: no early stopping")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default="runs/recipe")
    parser.add_argument("--table", default="runs/recipe/table.md")
    args = parser.parse_args()
    rows = [run_variant(v, s, args) for v in args.variants for s in args.seeds]
    for row in rows:
        print(json.dumps(row))
    lines = ["| variant | " + " | ".join(f"seed {s}" for s in args.seeds) + " | mean |",
             "|---|" + "---:|" * (len(args.seeds) + 1)]
    for v in args.variants:
        aucs = [r["best_val_auc"] for r in rows if r["variant"] == v]
        lines.append(f"| {v} | " + " | ".join(f"{a:.3f}" for a in aucs)
                     + f" | {np.mean(aucs):.3f} |")
    Path(args.table).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.table, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
