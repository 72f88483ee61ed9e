"""The reproduction study command on tiny real-data cells: tables, resume, paired test."""

from __future__ import annotations

import json

from qhqcnn.cli import main
from qhqcnn.reproduce import paired_test, summarize

TINY = ["--epochs", "1", "--max-train", "32", "--max-eval", "32", "--batch-size", "16"]


def test_reproduce_writes_tables_and_reuses_finished_cells(tmp_path, breast_dir, capsys):
    out, docs = tmp_path / "study", tmp_path / "docs" / "results.md"
    args = ["reproduce", "--datasets", "breastmnist,dermamnist", "--models", "hqcnn,classical",
            "--seeds", "2", "--out", str(out), "--docs", str(docs), "--data-dir", breast_dir,
            "--no-progress", *TINY]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "skipping (no file in the data directory): dermamnist" in printed
    study = json.loads((out / "results.json").read_text())
    assert len(study["cells"]) == 4
    assert {(c["model"], c["seed"]) for c in study["cells"]} == {
        ("hqcnn", 0), ("hqcnn", 1), ("classical", 0), ("classical", 1)}
    assert study["paired_tests"]["breastmnist"]["n_pairs"] == 2
    markdown = docs.read_text()
    assert "ResNet-18 (28) (published)" in markdown and "| hqcnn | 2 |" in markdown
    assert "dermamnist" in markdown  # listed as not run
    assert json.loads(docs.with_suffix(".json").read_text())["seeds"] == [0, 1]

    # a second invocation reuses every finished cell: no training happens
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("best.pt")}
    assert main(args) == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("best.pt")} == stamps


def _cell(model, seed, auc, acc=0.5):
    return {"dataset": "d", "model": model, "seed": seed, "test_auc": auc, "test_acc": acc,
            "parameters": {"classical": 1, "quantum": 0}, "train_seconds": 1.0}


def test_summary_and_paired_test():
    cells = [_cell("hqcnn", s, 0.8 + 0.01 * s) for s in range(5)]
    cells += [_cell("classical", s, 0.7 + 0.01 * s) for s in range(5)]
    rows = {r["model"]: r for r in summarize(cells)}
    assert abs(rows["hqcnn"]["auc_mean"] - 0.82) < 1e-12
    test = paired_test(cells, "d")
    assert test["n_pairs"] == 5 and abs(test["mean_difference"] - 0.1) < 1e-12
    assert abs(test["p_value"] - 0.0625) < 1e-9  # all 5 differences positive: exact p = 2/32
