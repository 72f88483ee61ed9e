"""Training-recipe exploration on the VALIDATION split only (the test split is never read).

    python benchmarks/recipe_validation.py [--dataset breastmnist] [--seeds 0 1] [--epochs 30]
        [--patience N] [--variants base qlr1e-2 ...] [--out runs/recipe]
        [--table runs/recipe/table.md]

The medical-imaging conventions of issue #18 (docs/recipe.md) are chosen with
``--variants hqcnn-recipe hqcnn-anatomy hqcnn-weights hqcnn-sampler hqcnn-ordinal … --epochs 40
--patience 15``: ``<model>-recipe`` is the shared recipe as it stands (every default), each other
variant changes one option of it. Finished (variant, seed) runs are kept as
``<out>/<variant>-s<seed>/validation.json`` and not run again, so an interrupted sweep resumes.

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

#: Issue #18's medical-imaging conventions and read-out capacity, one change each from the
#: recipe's defaults (run only when named in ``--variants``).
MEDICAL_VARIANTS = {
    f"{model}-{name}": (model, config_overrides, spec_overrides)
    for model in ("hqcnn", "classical")
    for name, config_overrides, spec_overrides in (
        ("recipe", {}, {}),
        ("anatomy", {"augment": "anatomy"}, {}),
        ("weights", {"class_balance": "weights"}, {}),
        ("sampler", {"class_balance": "sampler"}, {}),
        ("ordinal", {"loss": "ordinal"}, {}),
        ("ordinal-weights", {"loss": "ordinal", "class_balance": "weights"}, {}),
        ("zz", {}, {"observables": "zx+zz"}),
        ("q6", {}, {"num_qubits": 6}),
        ("q6-zz", {}, {"num_qubits": 6, "observables": "zx+zz"}),
        # the conventions on top of the multi-class read-out (BloodMNIST's choice)
        ("zz-anatomy", {"augment": "anatomy"}, {"observables": "zx+zz"}),
        ("zz-weights", {"class_balance": "weights"}, {"observables": "zx+zz"}),
    )
}
ALL_VARIANTS = {**VARIANTS, **QCNN_LR_VARIANTS, **MEDICAL_VARIANTS}


def best_epoch_val_acc(run_dir: Path, best_epoch: int) -> float:
    """Validation ACC of the checkpoint that was kept (the best-validation-AUC epoch)."""
    history = json.loads((run_dir / "history.json").read_text())
    return next(row["val_acc"] for row in history if row["epoch"] == best_epoch)


def run_variant(name: str, seed: int, args: argparse.Namespace) -> dict:
    run_dir = Path(args.out) / f"{name}-s{seed}"
    done = run_dir / "validation.json"
    if done.exists():
        row = json.loads(done.read_text())
        return {**row, "best_val_acc": best_epoch_val_acc(run_dir, row["best_epoch"])}
    model, config_overrides, spec_overrides = ALL_VARIANTS[name]
    config = TrainConfig(
        dataset=args.dataset, epochs=args.epochs, patience=args.patience or args.epochs, seed=seed,
        threads=args.threads, model=ModelSpec(model=model, **spec_overrides),
        max_train=args.max_train, **config_overrides,
    )
    started = time.time()
    trainer = Trainer(config, run_dir, data_dir=args.data_dir, progress=False)
    best = trainer.fit()
    row = {"variant": name, "seed": seed, "dataset": args.dataset,
           "best_val_auc": best["best_val_auc"], "best_epoch": best["best_epoch"],
           "best_val_acc": best_epoch_val_acc(run_dir, best["best_epoch"]),
           "seconds": time.time() - started}
    atomic_write_text(done, json.dumps(row, indent=2))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="breastmnist")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--patience", type=int, default=None, help="default: no early stopping")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=ALL_VARIANTS)
    parser.add_argument("--max-train", type=int, default=None,
                        help="train on the first N training images (a budgeted sweep; the "
                        "whole validation split is still scored)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default="runs/recipe")
    parser.add_argument("--table", default="runs/recipe/table.md")
    args = parser.parse_args()
    rows = [run_variant(v, s, args) for v in args.variants for s in args.seeds]
    for row in rows:
        print(json.dumps(row))
    lines = ["| variant | " + " | ".join(f"seed {s}" for s in args.seeds)
             + " | val AUC mean ± sd | val ACC mean |",
             "|---|" + "---:|" * (len(args.seeds) + 2)]
    for v in args.variants:
        aucs = [r["best_val_auc"] for r in rows if r["variant"] == v]
        accs = [r["best_val_acc"] for r in rows if r["variant"] == v]
        spread = f" ± {np.std(aucs, ddof=1):.3f}" if len(aucs) > 1 else ""
        lines.append(f"| {v} | " + " | ".join(f"{a:.3f}" for a in aucs)
                     + f" | {np.mean(aucs):.3f}{spread} | {np.mean(accs):.3f} |")
    Path(args.table).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.table, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
