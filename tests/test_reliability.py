"""Issue #15: each failure a demanding user found, as a test that would have caught it.

1 two trainings into one --out          6 raw tracebacks instead of clear errors
2 two concurrent hardware retrieves     7 --resume with conflicting settings
3 corrupt checkpoints load silently     8 misleading noise/credential/network errors
4 --qubits 30 grows until the OOM kill  9 hardware status misreports lost/corrupt chunks
5 divergence ends in a traceback       10 leftovers: short history, temp files, data folders

The concurrency tests start real processes; a gate (a patched function waiting for a file)
keeps the first one inside its locked section while the second one starts, so the overlap
the issue describes happens every time. New modules are imported inside the tests, so the
file runs (and fails) against the code before these fixes too.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import qhqcnn
from qhqcnn.cli.main import main
from qhqcnn.config import ModelSpec, TrainConfig
from qhqcnn.errors import (
    BackendError,
    ConfigError,
    DataError,
    IntegrityError,
    QhqcnnError,
    TrainingError,
)

ROOT = str(Path(qhqcnn.__file__).resolve().parents[1])  # the code under test, for subprocesses
SMALL = ["--max-train", "32", "--max-eval", "32", "--batch-size", "16", "--threads", "1"]
DEVICE = "fake_manila"


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=ROOT, MPLBACKEND="Agg", OMP_NUM_THREADS="1")
    env.update(extra)
    return env


def _cli(args: list[str], capsys) -> tuple[int, str]:
    """Run the CLI in-process; returns (exit code, stderr)."""
    try:
        code = main(args)
    except SystemExit as exc:  # argparse
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def _one_line_error(err: str, code: int, kind: type[QhqcnnError]) -> None:
    assert code == kind.exit_code, err
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, breast_dir) -> Path:
    """A finished 2-epoch classical run (copied by each test that changes it)."""
    out = tmp_path_factory.mktemp("rel") / "base"
    code = main(
        ["train", "--model", "classical", "--epochs", "2", "--out", str(out), "--no-progress",
         "--data-dir", breast_dir, *SMALL]
    )  # fmt: skip
    assert code == 0
    return out


def _copy(run: Path, tmp_path: Path, name: str = "run") -> Path:
    target = tmp_path / name
    shutil.copytree(run, target, ignore=shutil.ignore_patterns(".lock"))
    return target


def _wait_for_holder(directory: Path, pid: int, proc: subprocess.Popen, timeout: float = 120):
    """Wait until process ``pid`` holds the lock of ``directory`` (its lock file names it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            holder = json.loads((directory / ".lock").read_text())
        except (OSError, ValueError):
            holder = None
        if holder and holder.get("pid") == pid:
            return
        if proc.poll() is not None:
            raise AssertionError(f"the first process ended early: {proc.communicate()}")
        time.sleep(0.2)
    raise AssertionError("the first process never took the lock")


def _gated(module: str, attr: str, gate: Path, *argv: str) -> str:
    """Python code running ``qhqcnn *argv`` with ``module.attr`` waiting until ``gate`` exists
    (in the first process only: it holds the lock meanwhile)."""
    return textwrap.dedent(
        f"""
        import importlib, os, sys, time
        module = importlib.import_module({module!r})
        original = getattr(module, {attr!r})
        def gated(*args, **kwargs):
            while not os.path.exists({str(gate)!r}):
                time.sleep(0.1)
            return original(*args, **kwargs)
        setattr(module, {attr!r}, gated)
        from qhqcnn.cli.main import main
        sys.exit(main({list(argv)!r}))
        """
    )


# -- 1: two trainings into one --out --
def test_1_second_training_into_a_busy_run_directory_is_refused(tmp_path, breast_dir):
    out, gate = tmp_path / "x", tmp_path / "go"
    common = ["train", "--dataset", "breastmnist", "--model", "classical", "--epochs", "2",
              "--out", str(out), "--no-progress", "--data-dir", breast_dir, *SMALL]  # fmt: skip
    first = subprocess.Popen(
        [sys.executable, "-c", _gated("qhqcnn.training.trainer", "load_data", gate, *common)],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # The first run holds the lock before it has written config.json: the moment the
        # issue's "already holds a run" check could not see it.
        _wait_for_holder(out, first.pid, first)
        assert not (out / "config.json").exists()
        second = subprocess.run(
            [sys.executable, "-m", "qhqcnn", *common, "--seed", "5"],
            env=_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert second.returncode == IntegrityError.exit_code, second.stderr
        assert f"in use by process {first.pid}" in second.stderr
        assert "Traceback" not in second.stderr
        gate.touch()
        stdout, stderr = first.communicate(timeout=300)
    finally:
        gate.touch()
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, stderr
    record = json.loads((out / "config.json").read_text())
    assert record["config"]["seed"] == 0  # run 1's config, history, checkpoints and metrics
    metrics = json.loads((out / "metrics_test.json").read_text())
    assert f"{metrics['auc']:.4f}" in stdout
    best = torch.load(out / "best.pt", weights_only=False)
    assert best["epoch"] == metrics["checkpoint_epoch"]


def test_1_lock_is_released_when_its_holder_is_killed(tmp_path):
    from qhqcnn.errors import LockedError
    from qhqcnn.io.lock import exclusive_lock, is_locked

    folder = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\nfrom qhqcnn.io.lock import exclusive_lock\n"
         f"with exclusive_lock({str(folder)!r}, 'run directory'):\n"
         "    print('held', flush=True)\n    time.sleep(600)\n"],
        env=_env(), stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        assert is_locked(folder)
        with pytest.raises(LockedError, match=f"process {holder.pid} on"):
            with exclusive_lock(folder, "run directory"):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (folder / ".lock").exists()  # the file stays, naming a dead process: not stale
    assert not is_locked(folder)
    with exclusive_lock(folder, "run directory"):
        with exclusive_lock(folder, "run directory"):  # re-entrant within a process
            pass


# -- 2: two concurrent hardware retrieves --
@pytest.fixture(scope="module")
def hq_run(tmp_path_factory, breast_dir) -> Path:
    out = tmp_path_factory.mktemp("rel-hq") / "hq"
    code = main(
        ["train", "--epochs", "1", "--out", str(out), "--no-progress", "--backend", "exact",
         "--data-dir", breast_dir, *SMALL]
    )  # fmt: skip
    assert code == 0
    return out


@pytest.fixture
def no_ibm_account(tmp_path, monkeypatch):
    from qiskit_ibm_runtime.accounts import management

    from qhqcnn.hardware import jobs

    for name in ("QISKIT_IBM_TOKEN", "QISKIT_IBM_INSTANCE", "QISKIT_IBM_CHANNEL"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    account_file = home / ".qiskit" / "qiskit-ibm.json"
    monkeypatch.setattr(management, "_DEFAULT_ACCOUNT_CONFIG_JSON_FILE", str(account_file))
    yield home
    jobs.forget_local_jobs()


def _plan(run: Path, data_dir: str):
    from qhqcnn.hardware.plan import build_plan
    from qhqcnn.hardware.settings import ExecutionSettings

    settings = ExecutionSettings(shots=128, max_params_per_pub=8, seed_simulator=7)
    return build_plan(run, DEVICE, settings, limit=16, data_dir=data_dir)


def test_2_concurrent_retrieves_submit_each_missing_chunk_once(
    hq_run, breast_dir, tmp_path, no_ibm_account
):
    from qhqcnn.hardware.manifest import DONE, load_record
    from qhqcnn.hardware.submit import create_record

    record = create_record(_plan(hq_run, breast_dir), tmp_path, "rec")  # 2 chunks, none sent
    gate = tmp_path / "go"
    env = _env(HOME=str(no_ibm_account))
    first = subprocess.Popen(
        [sys.executable, "-c",
         _gated("qhqcnn.hardware.retrieve", "submit_chunks", gate,
                "hardware", "retrieve", str(record.path))],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _wait_for_holder(record.path, first.pid, first)
        second = subprocess.run(
            [sys.executable, "-m", "qhqcnn", "hardware", "retrieve", str(record.path)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert second.returncode == IntegrityError.exit_code, second.stderr
        assert f"in use by process {first.pid}" in second.stderr
        gate.touch()
        _, stderr = first.communicate(timeout=300)
    finally:
        gate.touch()
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, stderr
    done = load_record(record.path)
    assert [c["status"] for c in done.chunks] == [DONE, DONE]
    assert [len(c["attempts"]) for c in done.chunks] == [1, 1]  # 2 jobs for 2 chunks
    listed = {c["job_id"] for c in done.chunks}
    for index in (0, 1):
        assert done.read_result(index)["job_id"] in listed


# -- 3: corrupt checkpoints --
def _flip_weight_byte(path: Path) -> None:
    """Flip one byte inside the largest weight tensor's data (the file stays loadable)."""
    state = torch.load(path, weights_only=False)["model"]
    name = max(state, key=lambda k: state[k].numel())
    needle = state[name].detach().cpu().numpy().tobytes()[:64]
    data = bytearray(path.read_bytes())
    at = data.find(needle)
    assert at >= 0
    data[at + 7] ^= 0x7F  # the exponent byte of a float32: the weight becomes huge
    path.write_bytes(bytes(data))
    torch.load(path, weights_only=False)  # still a valid checkpoint file


def test_3_corrupt_best_checkpoint_is_refused_and_metrics_kept(
    base_run, tmp_path, breast_dir, capsys
):
    run = _copy(base_run, tmp_path)
    _flip_weight_byte(run / "best.pt")
    before = (run / "metrics_test.json").read_bytes()
    code, err = _cli(["evaluate", str(run), "--data-dir", breast_dir], capsys)
    _one_line_error(err, code, IntegrityError)
    assert "best.pt is corrupt" in err
    assert (run / "metrics_test.json").read_bytes() == before
    # A result file changed after evaluation is refused where it is read (the report).
    (run / "metrics_test.json").write_text(before.decode().replace('"acc"', '"acc" ', 1))
    code, err = _cli(["report", str(run)], capsys)
    _one_line_error(err, code, IntegrityError)
    assert "metrics_test.json is corrupt" in err


def test_3_corrupt_last_checkpoint_resumes_from_the_previous_one(
    base_run, tmp_path, breast_dir, capsys
):
    from qhqcnn import train

    run = _copy(base_run, tmp_path)
    _flip_weight_byte(run / "last.pt")
    lines: list[str] = []
    result = train(None, run, resume=True, data_dir=breast_dir, log=lines.append)
    assert any("last.pt is corrupt" in line and "previous.pt" in line for line in lines)
    assert any("resuming" in line and "epoch 2" in line for line in lines)  # epoch 2 re-run
    assert [h["epoch"] for h in json.loads((run / "history.json").read_text())] == [1, 2]
    assert result.best_epoch >= 1
    # Neither checkpoint verifies: refused, nothing trained.
    _flip_weight_byte(run / "last.pt")
    _flip_weight_byte(run / "previous.pt")
    code, err = _cli(["train", "--resume", "--out", str(run), "--data-dir", breast_dir], capsys)
    _one_line_error(err, code, IntegrityError)
    assert "no checkpoint of this run can be loaded" in err


# -- 4: memory --
def test_4_a_configuration_too_large_for_memory_is_refused_up_front(
    tmp_path, breast_dir, capsys, monkeypatch
):
    monkeypatch.delenv("QHQCNN_ALLOW_LARGE_MEMORY", raising=False)
    out = tmp_path / "big"
    started = time.monotonic()
    code, err = _cli(
        ["train", "--qubits", "30", "--out", str(out), "--data-dir", breast_dir, *SMALL], capsys
    )
    _one_line_error(err, code, ConfigError)
    assert "needs about" in err and "TiB" in err and "is available" in err
    assert time.monotonic() - started < 60
    assert not out.exists()


def test_4_memory_estimate_limit_and_override(monkeypatch):
    from qhqcnn.training import memory

    config = TrainConfig(model=ModelSpec(num_qubits=4))
    small = memory.estimate_memory(config).nbytes
    assert 0 < small < 1 << 30
    assert memory.estimate_memory(TrainConfig(model=ModelSpec("classical"))).nbytes == 0
    assert memory.estimate_memory(TrainConfig(model=ModelSpec(num_qubits=12))).nbytes > small
    monkeypatch.setattr(memory, "available_memory", lambda: small // 2)
    monkeypatch.delenv(memory.ALLOW_ENV, raising=False)
    with pytest.raises(ConfigError, match="needs about .* but only"):
        memory.check_memory(config)
    memory.check_memory(TrainConfig(model=ModelSpec(num_qubits=4), allow_large_memory=True))
    monkeypatch.setenv(memory.ALLOW_ENV, "1")
    memory.check_memory(config)


# -- 5: divergence --
@pytest.mark.parametrize(
    ("flags", "kind"),
    [
        (["--lr", "inf"], ConfigError),
        (["--quantum-lr", "inf"], ConfigError),
        # one batch per epoch: the step that diverges is the last before validation
        (["--lr", "1e12", "--model", "classical", "--max-train", "16"], TrainingError),
    ],
)
def test_5_divergence_is_a_clean_error(flags, kind, tmp_path, breast_dir, capsys):
    out = tmp_path / "div"
    code, err = _cli(
        ["train", "--epochs", "2", "--out", str(out), "--no-progress", "--data-dir", breast_dir,
         *SMALL, *flags],
        capsys,
    )  # fmt: skip
    _one_line_error(err, code, kind)
    if kind is TrainingError:
        assert "diverge" in err
        assert not (out / "metrics_test.json").exists()
        if (out / "last.pt").exists():  # the last good checkpoint: finite
            state = torch.load(out / "last.pt", weights_only=False)["model"]
            assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_5_non_finite_predictions_anywhere_stop_scoring():
    from qhqcnn.evaluation.evaluate import evaluate_model

    class Broken(torch.nn.Module):
        def forward(self, images):
            out = torch.zeros(images.shape[0], 2)
            out[0, 0] = float("nan")
            return out

    images = np.zeros((4, 28, 28), dtype=np.uint8)
    with pytest.raises(TrainingError, match="not finite"):
        evaluate_model(Broken(), images, np.array([0, 1, 0, 1]), "binary-class")


# -- 6: clear errors instead of tracebacks --
@pytest.mark.parametrize(
    "text",
    [
        '{"config": {"epochs": 2',  # JSONDecodeError
        '{"config": {"model": {"model": "classical"}, "max_eval": 2.5}}',  # TypeError (slicing)
        '{"config": {"model": {"model": "classical"}, "epochs": 2.0}}',  # TypeError (range)
        '{"config": {"model": 5}}',  # AttributeError
        '{"config": {"model": "classical"}, "data": []}',
    ],
)
def test_6_malformed_run_config_is_a_clear_error(text, base_run, tmp_path, breast_dir, capsys):
    run = _copy(base_run, tmp_path)
    (run / "config.json").write_text(text)
    for args in (["evaluate", str(run)], ["train", "--resume", "--out", str(run)]):
        code, err = _cli([*args, "--data-dir", breast_dir], capsys)
        _one_line_error(err, code, ConfigError)
        assert "config.json" in err


def test_6_checkpoint_that_does_not_fit_the_run(base_run, tmp_path, breast_dir, capsys):
    run = _copy(base_run, tmp_path)
    record = json.loads((run / "config.json").read_text())
    record["config"]["model"]["num_qubits"] = 6  # the twin's layers change size
    (run / "config.json").write_text(json.dumps(record))
    code, err = _cli(["evaluate", str(run), "--data-dir", breast_dir], capsys)
    _one_line_error(err, code, IntegrityError)
    assert "does not fit this run's model" in err
    code, err = _cli(["train", "--resume", "--out", str(run), "--data-dir", breast_dir], capsys)
    _one_line_error(err, code, IntegrityError)


def test_6_negative_seed(tmp_path, breast_dir, capsys):
    code, err = _cli(
        ["train", "--seed", "-1", "--out", str(tmp_path / "s"), "--data-dir", breast_dir], capsys
    )
    _one_line_error(err, code, ConfigError)
    assert "seed must be >= 0" in err


def test_6_full_disk_during_a_checkpoint_write(tmp_path, breast_dir, capsys, monkeypatch):
    real = Path.write_bytes

    def disk_full(self, data):
        if self.name.startswith(".last.pt."):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", disk_full)
    out = tmp_path / "full"
    code, err = _cli(
        ["train", "--model", "classical", "--epochs", "1", "--out", str(out), "--no-progress",
         "--data-dir", breast_dir, *SMALL],
        capsys,
    )  # fmt: skip
    _one_line_error(err, code, IntegrityError)
    assert "No space left on device" in err and "last.pt" in err
    assert not list(out.glob(".*.tmp"))


# -- 7: --resume with conflicting settings --
def test_7_resume_with_a_different_config_is_refused_and_lists_the_differences(
    base_run, tmp_path, breast_dir
):
    from qhqcnn import train

    run = _copy(base_run, tmp_path)
    saved = TrainConfig.from_dict(json.loads((run / "config.json").read_text())["config"])
    changed = TrainConfig.from_dict({**saved.to_dict(), "epochs": 6, "lr": 0.5})
    changed.model = ModelSpec("hqcnn")
    before = (run / "last.pt").read_bytes()
    with pytest.raises(ConfigError) as caught:
        train(changed, run, resume=True, data_dir=breast_dir)
    message = str(caught.value)
    for field in ("epochs (saved 2, given 6)", "lr (saved", "model.model (saved 'classical'"):
        assert field in message
    assert (run / "last.pt").read_bytes() == before


# -- 8: misleading errors --
def test_8_unknown_noise_name_is_a_config_error_that_touches_no_credentials(no_ibm_account):
    from qhqcnn.noise.models import load_noise

    with pytest.raises(ConfigError, match="unknown noise 'nosuchnoise'"):
        load_noise("nosuchnoise")
    assert not (no_ibm_account / ".qiskit").exists()


def test_8_unknown_noise_name_on_the_command_line(
    hq_run, tmp_path, breast_dir, capsys, no_ibm_account
):
    code, err = _cli(
        ["evaluate", str(hq_run), "--backend", "aer", "--noise", "torinoo", "--data-dir",
         breast_dir],
        capsys,
    )  # fmt: skip
    _one_line_error(err, code, ConfigError)
    assert "credentials" not in err and "unknown noise" in err
    assert not (no_ibm_account / ".qiskit").exists()


def test_8_real_device_without_credentials_writes_nothing(no_ibm_account):
    from qhqcnn.backends.devices import get_backend

    with pytest.raises(BackendError, match="no usable IBM Quantum credentials"):
        get_backend("ibm_torino")
    assert not (no_ibm_account / ".qiskit").exists()


def test_8_network_failure_is_not_reported_as_a_bad_token(monkeypatch, no_ibm_account):
    import qiskit_ibm_runtime
    import requests

    from qhqcnn.backends.devices import runtime_service

    class Offline:
        def __init__(self, **kwargs):
            try:
                raise requests.exceptions.ConnectionError(
                    "HTTPSConnectionPool(host='iam.cloud.ibm.com', port=443): Max retries "
                    "exceeded (Caused by NameResolutionError: Name or service not known)"
                )
            except requests.exceptions.ConnectionError as exc:
                raise RuntimeError(
                    "Unable to retrieve instances. Please check that you are using a valid "
                    "API token."
                ) from exc

    monkeypatch.setenv("QISKIT_IBM_TOKEN", "fake-token-1234567890abcdef")
    monkeypatch.setattr(qiskit_ibm_runtime, "QiskitRuntimeService", Offline)
    with pytest.raises(BackendError) as caught:
        runtime_service()
    message = str(caught.value)
    assert "cannot reach IBM Quantum" in message and "network" in message
    assert "valid API token" not in message and "fake-token" not in message


# -- 9: hardware status --
def test_9_status_reports_chunks_lost_with_a_killed_submit(
    hq_run, breast_dir, tmp_path, capsys, no_ibm_account
):
    from qhqcnn.hardware import jobs
    from qhqcnn.hardware.submit import submit

    record = submit(_plan(hq_run, breast_dir), tmp_path, name="killed", wait=False)
    jobs.forget_local_jobs()  # the submitting process has ended: its local jobs with it
    assert main(["hardware", "status", str(record.path)]) == 0
    out = capsys.readouterr().out
    assert "0/2 chunk(s) have verified results" in out
    assert "2 lost" in out and "2 would be submitted by retrieve" in out


def test_9_status_counts_only_results_that_verify(
    hq_run, breast_dir, tmp_path, capsys, no_ibm_account
):
    from qhqcnn.hardware import jobs
    from qhqcnn.hardware.manifest import DONE, load_record
    from qhqcnn.hardware.retrieve import chunk_states, retrieve
    from qhqcnn.hardware.submit import submit

    record = submit(_plan(hq_run, breast_dir), tmp_path, name="done")
    jobs.forget_local_jobs()
    (record.path / "results" / "chunk-0001.json").unlink()
    path = record.path / "results" / "chunk-0000.json"
    data = json.loads(path.read_text())
    data["evs"][0][0] = 0.123456  # still valid JSON of the right shape: only the hash knows
    path.write_text(json.dumps(data))
    states = chunk_states(record.path)
    assert [s["result"] for s in states] == [False, False]
    assert main(["hardware", "status", str(record.path)]) == 0
    out = capsys.readouterr().out
    assert "0/2 chunk(s) have verified results" in out and "2 would be submitted" in out
    record = retrieve(record.path)  # local jobs died with their process: submitted again
    assert [c["status"] for c in record.chunks] == [DONE, DONE]
    assert all(load_record(record.path).result_problem(i) is None for i in (0, 1))


# -- 10: leftovers --
def test_10_resume_repairs_a_short_history_and_removes_temp_files(
    base_run, tmp_path, breast_dir, capsys
):
    run = _copy(base_run, tmp_path)
    history = json.loads((run / "history.json").read_text())
    (run / "history.json").write_text(json.dumps(history[:1]))  # killed before its last write
    orphan = run / ".last.pt.k1ll3d.tmp"
    orphan.write_bytes(b"half a checkpoint")
    code, err = _cli(
        ["train", "--resume", "--out", str(run), "--no-progress", "--data-dir", breast_dir],
        capsys,
    )
    assert code == 0, err
    assert json.loads((run / "history.json").read_text()) == history
    assert "epoch,lr" in (run / "history.csv").read_text() and not orphan.exists()


def test_10_mistyped_data_dir_is_not_created(tmp_path, capsys, monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr("qhqcnn.data.medmnist.pooch.retrieve", offline)
    typo = tmp_path / "medmnsit" / "data"
    code, err = _cli(["train", "--data-dir", str(typo), "--out", str(tmp_path / "r")], capsys)
    _one_line_error(err, code, DataError)
    assert "is the path mistyped?" in err
    assert not (tmp_path / "medmnsit").exists() and not (tmp_path / "r").exists()
