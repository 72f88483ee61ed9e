"""The command line: flags generated from the config dataclasses, ``--config FILE``, ``--resume``
conflicts, the one error path (exit status by kind, ``--debug``) and the distinct device flags.
Nothing here trains: each test parses, builds configs or runs a stub handler (a few seconds in
all)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import types
from dataclasses import replace
from pathlib import Path

import pytest

import qhqcnn.cli.main as cli
from qhqcnn.cli.main import STUDY_KEYS, build_parser, check_resume, config_from_args, main
from qhqcnn.cli.options import config_options, walk
from qhqcnn.config import ModelSpec, TrainConfig
from qhqcnn.errors import (
    BackendError,
    ConfigError,
    DataError,
    HardwareError,
    IntegrityError,
    QhqcnnError,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


def _subparser(parser: argparse.ArgumentParser, *names: str) -> argparse.ArgumentParser:
    for name in names:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[name]
    return parser


def _action(parser: argparse.ArgumentParser, flag: str) -> argparse.Action:
    return parser._option_string_actions[flag]


def test_train_flags_are_the_config_fields():
    train = _subparser(build_parser(), "train")
    for opt in config_options():
        action = _action(train, opt.flag)
        assert action.dest == opt.key
        assert action.default is argparse.SUPPRESS  # the default lives in the dataclass only
        assert action.help and opt.meta["help"] in action.help.replace("%%", "%")
        if "choices" in opt.meta:
            assert list(action.choices) == list(opt.meta["choices"])
    # no flag given: exactly the dataclasses' defaults
    args = build_parser().parse_args(["train"])
    assert config_from_args(args) == TrainConfig()
    # reproduce sets dataset, model and seed itself
    reproduce = _subparser(build_parser(), "reproduce")
    flags = {o.key: o.flag for o in config_options()}
    for key in STUDY_KEYS:
        assert flags[key] not in reproduce._option_string_actions
    assert "--epochs" in reproduce._option_string_actions


def test_changing_a_dataclass_default_or_choice_changes_the_cli(monkeypatch):
    epochs = TrainConfig.__dataclass_fields__["epochs"]
    monkeypatch.setattr(epochs, "default", 7)
    augment = TrainConfig.__dataclass_fields__["augment"]
    meta = {**augment.metadata, "choices": ("flip", "none", "mixup")}
    monkeypatch.setattr(augment, "metadata", types.MappingProxyType(meta))
    layers = ModelSpec.__dataclass_fields__["layers"]
    monkeypatch.setattr(layers, "default", 5)
    train = _subparser(build_parser(), "train")
    assert _action(train, "--epochs").help.endswith("(default: 7)")
    assert _action(train, "--layers").help.endswith("(default: 5)")
    assert list(_action(train, "--augment").choices) == ["flip", "none", "mixup"]


def test_every_flag_of_every_command_has_help():
    missing = []
    for parser in walk(build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            if not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{parser.prog} {'/'.join(action.option_strings) or action.dest}")
    assert missing == []


def test_config_file_json_and_yaml_with_flags_overriding(tmp_path):
    data = {
        "epochs": 3,
        "lr": 0.01,
        "backend_options": {"device": "cpu"},
        "model": {"model": "classical", "layers": 3, "attention": False},
    }
    as_json = tmp_path / "recipe.json"
    as_json.write_text(json.dumps(data))
    as_yaml = tmp_path / "recipe.yaml"
    as_yaml.write_text(
        "epochs: 3\nlr: 1e-2\nbackend_options:\n  device: cpu\n"
        "model:\n  model: classical\n  layers: 3\n  attention: false\n"
    )
    parser = build_parser()
    for path in (as_json, as_yaml):
        config = config_from_args(parser.parse_args(["train", "--config", str(path)]))
        assert (config.epochs, config.lr, config.backend_options) == (3, 0.01, {"device": "cpu"})
        assert config.model == ModelSpec(model="classical", layers=3, attention=False)
        argv = ["train", "--config", str(path), "--epochs", "5", "--attention"]
        argv += ["--backend-option", "seed=4"]
        config = config_from_args(parser.parse_args(argv))
        assert (config.epochs, config.lr, config.model.layers) == (5, 0.01, 3)
        assert config.model.attention is True
        assert config.backend_options == {"device": "cpu", "seed": 4}
    as_yaml.write_text("dataset: bloodmnist\nrelabel: 3\n")
    config = config_from_args(parser.parse_args(["train", "--config", str(as_yaml)]))
    assert (config.dataset, config.relabel) == ("bloodmnist", "3")
    # a run's config.json record is a config file too
    record = tmp_path / "config.json"
    record.write_text(json.dumps({"config": TrainConfig(epochs=9).to_dict(), "parameters": {}}))
    assert config_from_args(parser.parse_args(["train", "--config", str(record)])).epochs == 9


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"epochs": 2, "colour": "blue"}', "unknown config key colour"),
        ('{"model": {"depth": 3}}', "unknown config key model.depth"),
        ('{"epochs": "many"}', "epochs must be int"),
        ('{"augment": "mixup"}', "augment must be one of"),
        ("[1, 2]", "must hold a mapping"),
        ('{"epochs": ', "not valid JSON"),
    ],
)
def test_bad_config_files_are_config_errors(tmp_path, capsys, text, message):
    path = tmp_path / "recipe.json"
    path.write_text(text)
    assert main(["train", "--config", str(path)]) == ConfigError.exit_code
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_missing_config_file(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "nope.yaml")]) == ConfigError.exit_code
    assert "cannot read --config" in capsys.readouterr().err


def _saved_run(tmp_path: Path, config: TrainConfig) -> Path:
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"config": config.to_dict()}))
    return out


def test_resume_refuses_flags_that_differ_from_the_saved_run(tmp_path, capsys):
    saved = TrainConfig(epochs=3, model=ModelSpec(model="classical"))
    out = _saved_run(tmp_path, saved)
    argv = ["train", "--resume", "--out", str(out), "--epochs", "5", "--lr", "0.01"]
    assert main([*argv, "--layers", "2", "--no-attention"]) == ConfigError.exit_code
    err = capsys.readouterr().err
    assert err.startswith("error: --resume continues") and err.count("\n") == 1
    assert "--epochs 5 (saved: 3)" in err and "--lr 0.01 (saved: 0.001)" in err
    assert "--no-attention (saved: --attention)" in err
    assert "--layers" not in err  # the same value as the saved run's is no conflict
    # flags equal to the saved config pass the check
    check_resume(out, {"epochs": 3, "model.model": "classical", "seed": 0})
    with pytest.raises(ConfigError, match="--backend-option device=cuda"):
        check_resume(out, {"backend_options": {"device": "cuda"}})


def test_resume_of_an_aer_run_takes_its_noise_flag_without_repeating_the_backend(tmp_path):
    noisy = TrainConfig(backend="aer", backend_options={"noise": "fake_manila"})
    out = _saved_run(tmp_path, noisy)
    argv = ["train", "--resume", "--out", str(out), "--noise", "fake_manila"]
    args = build_parser().parse_args(argv)
    values = cli.recipe_values(args, check_aer=False)
    check_resume(out, values)  # the same noise as saved: no conflict
    with pytest.raises(ConfigError, match="--noise apply to --backend aer only"):
        cli.recipe_values(args)


def _raising_handler(exc: BaseException):
    def handler(args):
        raise exc

    return handler


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (ConfigError("bad flag"), 3),
        (DataError("no data"), 4),
        (BackendError("no backend"), 5),
        (HardwareError("no device"), 6),
        (IntegrityError("bad checksum"), 7),
        (QhqcnnError("other"), 2),
        (ZeroDivisionError("boom"), 1),
        (PermissionError(13, "Permission denied", "runs/x"), 1),
        (KeyboardInterrupt(), 130),
    ],
)
def test_one_error_path_with_an_exit_status_per_kind(monkeypatch, capsys, exc, code):
    monkeypatch.setattr(cli, "_cmd_info", _raising_handler(exc))
    assert main(["info"]) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1
    if isinstance(exc, QhqcnnError):
        assert err == f"error: {exc}\n"
        assert exc.exit_code == code
    elif isinstance(exc, OSError):
        assert err.startswith("error: [Errno 13] Permission denied: 'runs/x'") and "--debug" in err
    elif code == 1:
        assert err.startswith("internal error: ZeroDivisionError: boom") and "--debug" in err
    # --debug (before or after the command) adds the traceback
    for argv in (["--debug", "info"], ["info", "--debug"]):
        assert main(argv) == code
        assert "Traceback (most recent call last)" in capsys.readouterr().err


def test_exit_codes_are_distinct_and_listed_in_help():
    codes = [code for code, _ in cli.exit_codes()]
    assert len(codes) == len(set(codes))
    text = build_parser().format_help()
    for code, meaning in cli.exit_codes():
        assert f"{code:>3}  {meaning}" in text


def test_aer_shortcuts_need_the_aer_backend(capsys):
    assert main(["train", "--shots", "100"]) == ConfigError.exit_code
    assert "--shots apply to --backend aer only" in capsys.readouterr().err
    args = build_parser().parse_args(["train", "--backend", "aer", "--noise", "fake_manila"])
    assert config_from_args(args).backend_options == {"noise": "fake_manila"}


def test_ibm_device_flag_is_distinct_and_the_old_name_still_works(capsys):
    parser = build_parser()
    args = parser.parse_args(["hardware", "plan", "runs/x", "--ibm-backend", "fake_manila"])
    assert args.ibm_backend == "fake_manila" and capsys.readouterr().err == ""
    args = parser.parse_args(["hardware", "plan", "runs/x", "--backend", "fake_manila"])
    assert args.ibm_backend == "fake_manila"
    assert "--backend is deprecated: use --ibm-backend" in capsys.readouterr().err
    argv = ["circuits", "export", "--backend", "fake_a", "--ibm-backend", "fake_b"]
    assert parser.parse_args(argv).ibm_backend == ["fake_a", "fake_b"]
    with pytest.raises(SystemExit):
        parser.parse_args(["hardware", "plan", "runs/x"])  # the device is required
    capsys.readouterr()


def test_help_and_version_need_no_torch_or_qiskit():
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    code = (
        "import sys, time; t = time.perf_counter()\n"
        "from qhqcnn.cli.main import build_parser; build_parser().format_help()\n"
        "t = time.perf_counter() - t\n"
        "print(f'{t:.3f}', [m for m in ('torch', 'qiskit') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    seconds, heavy = out.stdout.split(" ", 1)
    assert heavy.strip() == "[]", out.stderr
    assert float(seconds) < 1.0


def test_replace_keeps_config_equality_for_resume_checks():
    # differences() compares the saved record's values: a resolved lr equals the same flag
    saved = replace(TrainConfig(), epochs=2)
    from qhqcnn.cli.options import differences

    assert differences(saved, {"lr": 1e-3, "epochs": 2}) == []
