"""The reproduction study command on tiny real-data cells: tables, resume, paired tests of each
quantum model vs its classical twin, the quanv feature cache, and ``--finished-only``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qhqcnn.cli.main import main
from qhqcnn.config import ModelSpec, TrainConfig
from qhqcnn.errors import ConfigError
from qhqcnn.study.reproduce import StudyPlan, paired_test, summarize

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
    test = study["paired_tests"]["breastmnist"]["hqcnn"]
    assert test["n_pairs"] == 2 and (test["quantum"], test["classical"]) == ("hqcnn", "classical")
    assert study["not_run"] == [] and not study["finished_only"]
    markdown = docs.read_text()
    assert "ResNet-18 (28) (published)" in markdown and "| hqcnn | 2 |" in markdown
    assert "Wilcoxon signed-rank, hqcnn vs classical, test AUC paired by seed" in markdown
    assert "dermamnist" in markdown  # listed as not run
    assert json.loads(docs.with_suffix(".json").read_text())["seeds"] == [0, 1]
    # --docs gets its own copy of the figure, where the docs page's link points
    figure = "figures/study_breastmnist.png"
    assert (docs.parent / figure).read_bytes() == (out / figure).read_bytes()
    assert not (docs.parent / "figures" / "study_dermamnist.png").exists()  # no run, no figure

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


def test_each_quantum_model_is_paired_with_its_twin():
    cells = [_cell("quanv", s, 0.6) for s in range(4)]
    cells += [_cell("quanv-classical", s, 0.7 + 0.01 * s) for s in range(3)]  # seeds 0-2 only
    cells += [_cell("classical", s, 0.9) for s in range(4)]  # not quanv's twin: never paired
    test = paired_test(cells, "d", quantum="quanv")
    assert (test["quantum"], test["classical"]) == ("quanv", "quanv-classical")
    assert test["n_pairs"] == 3 and test["seeds"] == [0, 1, 2]
    assert abs(test["mean_difference"] + 0.11) < 1e-12
    assert paired_test(cells, "d", quantum="qcnn")["n_pairs"] == 0  # no qcnn-classical cells
    plan = StudyPlan(["d"], ["hqcnn", "quanv", "qcnn", "qcnn-classical", "quanv-classical"], [0])
    assert plan.pairs() == [("quanv", "quanv-classical"), ("qcnn", "qcnn-classical")]
    with pytest.raises(ConfigError, match="unknown model"):
        StudyPlan(["d"], ["hqcnn", "qunav"], [0])


def test_the_qcnn_pair_has_its_own_learning_rate_unless_lr_is_given():
    from qhqcnn.cli.main import build_parser, config_from_args
    from qhqcnn.study.reproduce import describe_recipe

    plan = StudyPlan(["d"], ["hqcnn", "qcnn", "qcnn-classical"], [0], model_lr=True)
    assert [plan.cell_config("d", m, 0).lr for m in plan.models] == [1e-3, 3e-2, 3e-2]
    assert plan.recipe_record()["lr"] == {"hqcnn": 1e-3, "qcnn": 3e-2, "qcnn-classical": 3e-2}
    assert "lr=0.001 (qcnn 0.03, qcnn-classical 0.03)" in describe_recipe(plan.recipe_record())
    assert StudyPlan(["d"], ["qcnn"], [0], model_lr=True).recipe_record()["lr"] == 3e-2
    # The default lives in the config itself, so the Python API agrees with the CLI.
    assert TrainConfig(model=ModelSpec(model="qcnn")).lr == 3e-2 and TrainConfig().lr == 1e-3
    # An explicit --lr is every model's.
    fixed = StudyPlan(["d"], ["hqcnn", "qcnn"], [0], TrainConfig(lr=5e-3))
    assert [fixed.cell_config("d", m, 0).lr for m in fixed.models] == [5e-3, 5e-3]
    parser = build_parser()
    for argv, model, lr in (
        ([], "qcnn", 3e-2),
        ([], "hqcnn", 1e-3),
        (["--lr", "0.002"], "qcnn", 2e-3),
    ):
        args = parser.parse_args(["train", "--dataset", "breastmnist", *argv])
        assert config_from_args(args, dataset="breastmnist", model=model, seed=0).lr == lr


QUANV_FAMILY = "quanv,quanv-classical,qcnn,qcnn-classical"


def test_reproduce_quanv_family_uses_the_cache_and_finished_only(tmp_path, breast_dir, capsys):
    out, docs, cache = tmp_path / "study", tmp_path / "results.md", tmp_path / "cache"
    base = ["reproduce", "--datasets", "breastmnist", "--models", QUANV_FAMILY, "--out", str(out),
            "--docs", str(docs), "--data-dir", breast_dir, "--no-progress",
            "--cache-dir", str(cache), *TINY]  # fmt: skip
    assert main([*base, "--seeds", "2"]) == 0
    printed = capsys.readouterr().out
    # the fixed filter's features: computed once (train, val, test), then cache hits
    assert printed.count("quanv features") == 6
    assert printed.count("computed") == 3 and printed.count("cache hit") == 3
    assert len(list((cache / "quanv").glob("breastmnist-*.npz"))) == 3
    study = json.loads((out / "results.json").read_text())
    assert len(study["cells"]) == 8
    params = {c["model"]: c["parameters"] for c in study["cells"]}
    assert params["quanv"]["total"] == params["quanv-classical"]["total"]  # 0 trainable in head
    assert params["qcnn"]["total"] == params["qcnn-classical"]["total"]  # 31 vs 31
    assert params["qcnn"]["quantum"] == 31 and params["qcnn-classical"]["quantum"] == 0
    tests = study["paired_tests"]["breastmnist"]
    assert set(tests) == {"quanv", "qcnn"}
    assert tests["quanv"]["classical"] == "quanv-classical" and tests["quanv"]["n_pairs"] == 2
    assert tests["qcnn"]["classical"] == "qcnn-classical" and tests["qcnn"]["n_pairs"] == 2
    markdown = docs.read_text()
    assert "| quanv-classical | 2 |" in markdown and "quanv vs quanv-classical" in markdown

    # one twin cell loses its metrics, another seed is half-trained: --finished-only with 3
    # seeds trains nothing and reports each row's seed count and what is not run
    (out / "breastmnist" / "qcnn-classical" / "seed1" / "metrics_test.json").unlink()
    partial = out / "breastmnist" / "quanv" / "seed2"
    partial.mkdir(parents=True)
    (partial / "config.json").write_text(json.dumps({"config": {"epochs": 40}}))
    (partial / "history.json").write_text(json.dumps([{"epoch": 1}, {"epoch": 2}]))
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert main([*base, "--seeds", "3", "--finished-only"]) == 0
    assert "7 finished cells tabulated; not run: 5" in capsys.readouterr().out
    changed = {p for p, t in stamps.items() if p.stat().st_mtime_ns != t}
    assert {p.name for p in changed} <= {"results.json", "results.md", "study_breastmnist.png"}
    assert not (out / "breastmnist" / "quanv-classical" / "seed2").exists()
    study = json.loads((out / "results.json").read_text())
    assert study["finished_only"] and study["seeds"] == [0, 1, 2]
    assert {(c["model"], c["seed"]) for c in study["not_run"]} == {
        ("quanv", 2), ("quanv-classical", 2), ("qcnn", 2), ("qcnn-classical", 1),
        ("qcnn-classical", 2)}  # fmt: skip
    status = {(c["model"], c["seed"]): c["status"] for c in study["not_run"]}
    assert status[("quanv", 2)] == "started, 2/40 epochs"
    assert status[("qcnn-classical", 1)] == "trained, not evaluated"
    assert status[("qcnn-classical", 2)] == "not started"
    rows = {r["model"]: r for r in study["summary"]}
    assert rows["qcnn-classical"]["n_seeds"] == 1 and rows["qcnn-classical"]["seeds"] == [0]
    assert rows["quanv"]["n_seeds"] == 2
    tests = study["paired_tests"]["breastmnist"]
    assert tests["qcnn"]["n_pairs"] == 1 and tests["qcnn"]["p_value"] is None
    markdown = docs.read_text()
    assert "| qcnn-classical | 1 |" in markdown and "| quanv | 2 |" in markdown
    assert "Not run (no test metrics yet): quanv seed 2 (started, 2/40 epochs);" in markdown
    assert "qcnn-classical seed 1 (trained, not evaluated), seed 2 (not started)." in markdown
    assert "qcnn vs qcnn-classical: not computed, 1 seed(s)" in markdown
    assert "another recipe" not in markdown

    # a reused cell trained with another recipe is flagged, not silently mixed in
    assert main([*base, "--seeds", "1", "--finished-only", "--lr", "0.002"]) == 0
    study = json.loads((out / "results.json").read_text())
    trained_lr = {"quanv": 1e-3, "quanv-classical": 1e-3, "qcnn": 3e-2, "qcnn-classical": 3e-2}
    for cell in study["cells"]:  # the QCNN pair trained at its own default lr
        assert cell["recipe_differences"] == {"lr": [trained_lr[cell["model"]], 0.002]}
    assert "Cells trained with another recipe than the one above: quanv seed 0 (lr=0.001)" in (
        docs.read_text()
    )


def test_recipe_differences_ignore_what_a_cell_is_and_how_it_ran():
    from qhqcnn.study.reproduce import recipe_differences

    recipe = {"dataset": "a", "seed": 0, "epochs": 40, "threads": 1, "new_key": 1,
              "model": {"model": "hqcnn", "layers": 2}}  # fmt: skip
    cell = {"dataset": "b", "seed": 3, "epochs": 40, "threads": None,
            "model": {"model": "quanv", "layers": 1}}  # fmt: skip
    assert recipe_differences(recipe, cell) == {"model.layers": [1, 2]}


def test_cells_in_worker_processes_equal_the_serial_study(tmp_path, breast_dir, capsys):
    def study(name, *extra):
        out = tmp_path / name
        args = ["reproduce", "--datasets", "breastmnist", "--models", "hqcnn,classical",
                "--seeds", "2", "--out", str(out), "--docs", str(tmp_path / f"{name}.md"),
                "--data-dir", breast_dir, "--threads", "1", "--no-progress", *TINY, *extra]
        assert main(args) == 0
        cells = json.loads((out / "results.json").read_text())["cells"]
        return {(c["model"], c["seed"]): (c["test_acc"], c["test_auc"]) for c in cells}

    assert study("parallel", "--workers", "2") == study("serial")
    capsys.readouterr()
    code = main(["reproduce", "--workers", "0", "--data-dir", breast_dir, *TINY])
    assert code == ConfigError.exit_code
    assert "workers must be >= 1" in capsys.readouterr().err


def test_markdown_reports_targets_met_or_missed_and_the_paper_note():
    from qhqcnn.study.reproduce import PAPER_CLAIMS_NOTE, _target_lines, paper_claims_note

    study = {"summary": [{"dataset": "breastmnist", "model": "hqcnn", "n_seeds": 3,
                          "acc_mean": 0.9, "auc_mean": 0.9},
                         {"dataset": "breastmnist", "model": "resnet18", "n_seeds": 10,
                          "acc_mean": 0.8, "auc_mean": 0.95}]}  # fmt: skip
    (line, _, other, _) = _target_lines(study, "breastmnist")
    assert "hqcnn" in line and "3 seed(s)" in line
    assert "ACC 0.9000 vs ≥ 0.865 (met)" in line and "AUC 0.9000 vs ≥ 0.901 (missed)" in line
    assert other.startswith("Target for resnet18 (mean of 10 seed(s)): ACC 0.8000 vs ≥ 0.865")
    assert _target_lines(study, "dermamnist") == []
    assert "claim" in PAPER_CLAIMS_NOTE and "neither reproduced nor used as targets" in (
        PAPER_CLAIMS_NOTE
    )
    assert paper_claims_note(["bloodmnist", "breastmnist"]) == PAPER_CLAIMS_NOTE
    # no claim row in the table: the note must not describe rows that are not there
    assert paper_claims_note(["bloodmnist", "retinamnist"]) == (
        "The HQCNN paper (arXiv 2509.14277 v1) states no number that can be cited for "
        "bloodmnist, retinamnist (../shared/notes/hqcnn-paper.md), so this study has no claim row."
    )


def test_recorded_command_leaves_out_the_data_directory():
    from qhqcnn.cli.main import recorded_command

    argv = ["reproduce", "--data-dir", "/d/x", "--out", "runs/s", "--data-dir=/y", "--seeds", "5"]
    assert recorded_command(argv) == "qhqcnn reproduce --out runs/s --seeds 5"


def test_baselines_comparisons_and_nothing_written_outside_out(tmp_path, breast_dir, monkeypatch,
                                                               capsys):
    monkeypatch.chdir(tmp_path)  # a user's checkout: its docs/ must stay untouched
    out = tmp_path / "study"
    args = ["reproduce", "--datasets", "breastmnist", "--models",
            "hqcnn,classical,backbone-head,resnet18", "--seeds", "2", "--out", str(out),
            "--data-dir", breast_dir, "--threads", "1", "--no-progress", *TINY]  # fmt: skip
    assert main(args) == 0
    assert f"results written to {out}/results.md\n" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study"]
    study = json.loads((out / "results.json").read_text())
    comps = study["comparisons"]["breastmnist"]
    pairs = [(c["quantum"], c["classical"], c["metric"]) for c in comps]
    assert pairs[:2] == [("hqcnn", "classical", "test_auc"), ("hqcnn", "classical", "test_acc")]
    assert ("classical", "backbone-head", "test_auc") in pairs
    assert ("hqcnn", "resnet18", "test_acc") in pairs and len(pairs) == 8
    for c in comps:  # 2 seeds: tested, but the floor (0.5) says it could never reject
        assert c["n_pairs"] == 2 and c["p_floor"] >= 0.5
        assert "no detectable difference at this n" in c["reading"] or "not tested" in c["reading"]
        assert c["family_size"] == 8 and c["holm_floor"] == 1.0  # 8 × 0.5, capped at 1
    params = {c["model"]: c["parameters"]["total"] for c in study["cells"]}
    assert params["resnet18"] > 11_000_000 and params["backbone-head"] > 900_000
    assert all(c["test_bootstrap"]["auc_ci95"] is not None for c in study["cells"])
    assert all((Path(c["run"]) / "bootstrap_test.json").exists() for c in study["cells"])
    markdown = (out / "results.md").read_text()
    assert "| resnet18 | 2 |" in markdown and "| backbone-head | 2 |" in markdown
    assert "| hqcnn − backbone-head | AUC | 2 |" in markdown
    assert ("Holm floor of this table: 8 tested comparisons × the smallest p floor = 1 (> 0.05: "
            "no comparison of this table can be declared different after the correction at this "
            "n, whatever the models do; 9 non-zero pairs per comparison are needed).") in markdown
    # the twin line reads the table's Holm-corrected verdict, never an uncorrected "Holm" claim
    assert "(2 pairs; smallest attainable p at this n: 0.5), Holm p = " in markdown
    assert "*HQCNN paper, arXiv 2509.14277 (claim, not reproduced, not a target)" in markdown
    assert "*0.8718*" in markdown and "ResNet-18 (28) (published)" in markdown
    assert "Target for resnet18 (mean of 2 seed(s))" in markdown
    # the figure lies beside results.md, where its link points
    assert "differences with their 95 % intervals and Holm p](figures/study_breastmnist.png)" in (
        markdown
    )
    assert (out / "figures" / "study_breastmnist.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "smallest attainable p at this n:" in markdown and "cannot reject at this n" in markdown


def test_imported_cells_are_tabulated_and_not_trained_again(
    tmp_path, breast_dir, capsys, monkeypatch
):
    first, second, third = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    base = ["reproduce", "--datasets", "breastmnist", "--models", "hqcnn,classical",
            "--data-dir", breast_dir, "--no-progress", *TINY]  # fmt: skip
    assert main([*base, "--seeds", "2", "--out", str(first)]) == 0
    recorded = json.loads((first / "results.json").read_text())
    numbers = {(c["model"], c["seed"]): (c["test_acc"], c["test_auc"]) for c in recorded["cells"]}
    # the medmnist result file is named as the study names its runs, never by a machine path
    monkeypatch.chdir(tmp_path)
    assert main([*base, "--seeds", "2", "--out", "a", "--finished-only"]) == 0
    relative = json.loads((first / "results.json").read_text())["cells"]
    assert all(c["medmnist_file"].startswith(f"{c['run']}/breastmnist_test_") for c in relative)

    # the first study's run files are gone (another machine): its records are enough to tabulate
    imported = ["--import-cells", str(first / "results.json")]
    assert main([*base, "--seeds", "3", "--out", str(second), "--finished-only", *imported]) == 0
    study = json.loads((second / "results.json").read_text())
    assert {(c["model"], c["seed"]): (c["test_acc"], c["test_auc"]) for c in study["cells"]} == (
        numbers
    )
    assert all(c["imported_from"]["file"] == str(first / "results.json") for c in study["cells"])
    assert {(c["model"], c["seed"]) for c in study["not_run"]} == {("hqcnn", 2), ("classical", 2)}
    assert study["paired_tests"]["breastmnist"]["hqcnn"]["n_pairs"] == 2
    markdown = (second / "results.md").read_text()
    assert "Imported cells (trained by an earlier study" in markdown
    assert f"hqcnn seeds 0–1, classical seeds 0–1 (from `{first / 'results.json'}`" in markdown
    assert not (second / "breastmnist").exists()  # nothing trained

    # training the study trains only the cell that no record has
    capsys.readouterr()
    assert main([*base, "--seeds", "3", "--out", str(second), *imported]) == 0
    printed = capsys.readouterr().out
    assert "== breastmnist / hqcnn / seed 2" in printed and "seed 0" not in printed
    assert sorted(p.name for p in (second / "breastmnist" / "hqcnn").iterdir()) == ["seed2"]
    study = json.loads((second / "results.json").read_text())
    assert len(study["cells"]) == 6 and study["not_run"] == []
    assert study["paired_tests"]["breastmnist"]["hqcnn"]["n_pairs"] == 3
    assert [c.get("imported_from") is None for c in study["cells"]] == [False, False, True] * 2

    # a finished run under --out takes precedence over a record of the same cell
    own = ["--import-cells", str(second / "results.json")]
    assert main([*base, "--seeds", "3", "--out", str(second), "--finished-only", *own]) == 0
    study = json.loads((second / "results.json").read_text())
    assert [c.get("imported_from") is None for c in study["cells"]] == [False, False, True] * 2

    # a study of imported cells imported again keeps where each cell was trained, and a cell
    # recorded under another recipe is flagged, not silently mixed in
    again = ["--import-cells", str(second / "results.json")]
    assert main([*base, "--seeds", "3", "--out", str(third), "--finished-only", "--lr", "0.002",
                 *again]) == 0  # fmt: skip
    study = json.loads((third / "results.json").read_text())
    sources = [Path(c["imported_from"]["file"]).parent.name for c in study["cells"]]
    assert sources == ["a", "a", "b"] * 2
    assert all(c["recipe_differences"] == {"lr": [0.001, 0.002]} for c in study["cells"])
    markdown = (third / "results.md").read_text()
    assert "Cells trained with another recipe than the one above" in markdown


def _results_file(path, cells, commit="abc1234"):
    environment = {"git_commit": commit, "packages": {}}
    study = {"finished": "2026-12-04 11:39 UTC", "cells": cells, "environment": environment}
    path.write_text(json.dumps(study))
    return path


def _record(seed=0, auc=0.9, **changes):
    config = {"dataset": "bloodmnist", "seed": seed, "model": {"model": "resnet18"}}
    return {"dataset": "bloodmnist", "model": "resnet18", "seed": seed, "test_acc": 0.9,
            "test_auc": auc, "best_epoch": 3, "epochs_run": 4, "train_seconds": 1.0,
            "parameters": {"classical": 1, "quantum": 0}, "config": config, **changes}  # fmt: skip


def test_imported_records_are_checked_and_never_mixed(tmp_path, capsys):
    from qhqcnn.errors import IntegrityError
    from qhqcnn.study.imported import load_imported_cells

    good = _results_file(tmp_path / "good.json", [_record(0), _record(1)])
    copy = _results_file(tmp_path / "copy.json", [_record(1)], commit="def5678")
    cells = load_imported_cells([good, copy])  # the same record twice is one cell
    assert set(cells) == {("bloodmnist", "resnet18", 0), ("bloodmnist", "resnet18", 1)}
    origin = cells[("bloodmnist", "resnet18", 1)]["imported_from"]
    assert origin == {"file": str(good), "study_finished": "2026-12-04 11:39 UTC",
                      "git_commit": "abc1234", "packages": {}}  # fmt: skip

    other = _results_file(tmp_path / "other.json", [_record(1, auc=0.8)])
    with pytest.raises(IntegrityError, match="recorded twice with different results"):
        load_imported_cells([good, other])
    from qhqcnn.study.imported import describe_imported

    seeds = [8, 0, 1, 2, 3, 5, 7]
    line = describe_imported([dict(_record(s), imported_from=origin) for s in seeds])
    assert "resnet18 seeds 0–3, 5, 7–8 (from `" in line and "commit abc1234)" in line
    assert describe_imported([_record(4)]) is None  # trained here: nothing to name
    bad_records = {
        "lacks test_auc": {k: v for k, v in _record().items() if k != "test_auc"},
        "is not a number in": _record(auc=1.5),
        "its config is not a training config": _record(config="hqcnn"),
        "but its config says bloodmnist/resnet18/1": _record(0, config={
            "dataset": "bloodmnist", "seed": 1, "model": {"model": "resnet18"}}),
    }  # fmt: skip
    for message, record in bad_records.items():
        with pytest.raises(IntegrityError, match=message):
            load_imported_cells([_results_file(tmp_path / "bad.json", [record])])
    (tmp_path / "broken.json").write_text('{"cells": [')
    with pytest.raises(IntegrityError, match="not a readable results.json"):
        load_imported_cells([tmp_path / "broken.json"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_imported_cells([tmp_path / "absent.json"])

    # on the command line: the package's one-line error and its exit code, nothing written
    out = tmp_path / "study"
    code = main(["reproduce", "--datasets", "bloodmnist", "--models", "resnet18", "--seeds", "2",
                 "--out", str(out), "--finished-only", "--import-cells", str(other),
                 "--import-cells", str(good), "--data-dir", str(tmp_path)])  # fmt: skip
    assert code == IntegrityError.exit_code
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "recorded twice" in error
    assert not out.exists()
