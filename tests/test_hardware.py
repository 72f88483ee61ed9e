"""Hardware validation end to end in qiskit-ibm-runtime's local testing mode (fake devices).

plan → submit → status → retrieve → report on a tiny trained BreastMNIST run, with faults
injected: a job that errors, a process killed between two submissions, a corrupted manifest,
an unknown backend, missing credentials, and a token that must never reach the disk.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from qhqcnn.backends.devices import get_backend, get_fake_backend
from qhqcnn.cli.main import main
from qhqcnn.errors import BackendError, ConfigError, HardwareError
from qhqcnn.hardware import jobs
from qhqcnn.hardware.manifest import (
    DONE,
    FAILED,
    LOST,
    SUBMITTED,
    SUBMITTING,
    JobRecordError,
    load_record,
)
from qhqcnn.hardware.plan import build_plan, make_chunks
from qhqcnn.hardware.primitives import LEGACY, applied_mitigation, choose_primitive
from qhqcnn.hardware.retrieve import chunk_states, retrieve
from qhqcnn.hardware.settings import ExecutionSettings, parse_mitigation
from qhqcnn.hardware.submit import create_record, submit

DEVICE = "fake_manila"  # 5 qubits: the executor estimator simulates every qubit locally
FAKE_TOKEN = "fake-token-1234567890abcdef"
FAKE_INSTANCE = "crn:v1:bluemix:public:quantum-computing:us-east:a/fake0instance0secret::"
SMALL = ["--limit", "16", "--shots", "256", "--max-params-per-pub", "8", "--seed-simulator", "7"]


@pytest.fixture(autouse=True)
def no_ibm_account(tmp_path, monkeypatch):
    """No token in the environment and no reachable saved account; local jobs forgotten."""
    from qiskit_ibm_runtime.accounts import management

    for name in ("QISKIT_IBM_TOKEN", "QISKIT_IBM_INSTANCE", "QISKIT_IBM_CHANNEL", "QISKIT_IBM_URL"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setattr(
        management, "_DEFAULT_ACCOUNT_CONFIG_JSON_FILE", str(home / ".qiskit" / "qiskit-ibm.json")
    )
    yield
    jobs.forget_local_jobs()


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, breast_dir) -> Path:
    """A tiny HQCNN run trained with the exact engine (one epoch on 64 images)."""
    pytest.importorskip("qhqcnn.engine", reason="the exact engine is needed to train")
    out = tmp_path_factory.mktemp("hw-run") / "run"
    code = main(
        [
            "train", "--dataset", "breastmnist", "--max-train", "64", "--max-eval", "32",
            "--epochs", "1", "--out", str(out), "--no-progress", "--backend", "exact",
            "--data-dir", breast_dir,
        ]
    )  # fmt: skip
    assert code == 0
    return out


@pytest.fixture(scope="module")
def done_record(trained_run, breast_dir, tmp_path_factory) -> Path:
    """A finished local job record: 16 test images in 2 chunks on fake_manila (CLI submit)."""
    jobs_dir = tmp_path_factory.mktemp("hw-jobs")
    code = main(
        ["hardware", "submit", str(trained_run), "--backend", DEVICE, *SMALL,
         "--jobs-dir", str(jobs_dir), "--name", "e2e", "--data-dir", breast_dir]
    )  # fmt: skip
    assert code == 0
    jobs.forget_local_jobs()
    return jobs_dir / "e2e"


def _plan(run, data_dir, limit: int = 16, **settings):
    defaults = {"shots": 256, "max_params_per_pub": 8, "seed_simulator": 7}
    return build_plan(
        run,
        DEVICE,
        ExecutionSettings(**{**defaults, **settings}),
        limit=limit,
        data_dir=data_dir,
    )


def _fail_first_job(monkeypatch, message: str) -> None:
    """Make the first local executor job that runs end in ERROR with ``message``."""
    from qiskit_ibm_runtime.fake_provider import local_service

    original = local_service.run_quantum_program
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError(message)
        return original(*args, **kwargs)

    monkeypatch.setattr(local_service, "run_quantum_program", flaky)


def _snapshot(path: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


# -- units ---------------------------------------------------------------------------------------
def test_chunks_hold_whole_images():
    # quanv: 196 parameter sets per image; a PUB never splits an image, even past the cap.
    chunks = make_chunks(5 * 196, 500, 2, rows_per_image=196)
    assert [c["pubs"] for c in chunks] == [[[0, 392], [392, 784]], [[784, 980]]]
    assert [c["pubs"] for c in make_chunks(2 * 588, 500, 1, 588)] == [[[0, 588]], [[588, 1176]]]


def test_chunks_cover_every_parameter_set_once():
    chunks = make_chunks(23, max_params_per_pub=5, max_pubs_per_job=2)
    assert [(c["start"], c["stop"]) for c in chunks] == [(0, 10), (10, 20), (20, 23)]
    assert chunks[0]["pubs"] == [[0, 5], [5, 10]] and chunks[2]["pubs"] == [[20, 23]]
    assert len(make_chunks(7, 100, 1)) == 1


def test_mitigation_options():
    assert parse_mitigation(["trex,zne", "dd"]) == ("trex", "zne", "dd")
    with pytest.raises(ConfigError, match="unknown mitigation"):
        parse_mitigation("pec")
    with pytest.raises(ConfigError, match="none cannot be combined"):
        parse_mitigation("none,trex")
    options = ExecutionSettings(shots=100, mitigation=("zne", "twirling", "dd")).estimator_options()
    assert options["default_shots"] == 100 and options["resilience_level"] == 0
    assert options["resilience"] == {"zne_mitigation": True}
    assert options["twirling"] == {"enable_gates": True, "enable_measure": True}
    assert options["dynamical_decoupling"]["enable"] is True
    assert "resilience" not in ExecutionSettings(mitigation=("none",)).estimator_options()
    with pytest.raises(ConfigError):
        ExecutionSettings(shots=0)


def test_primitive_choice_and_what_really_applies(monkeypatch):
    import qhqcnn.hardware.primitives as primitives

    assert choose_primitive("auto", get_fake_backend(DEVICE))[0] == "executor"
    with monkeypatch.context() as m:  # an older qiskit-ibm-runtime: only EstimatorV2 exists
        m.setattr(primitives, "executor_estimator_class", lambda: None)
        kind, reason = choose_primitive("auto", get_fake_backend(DEVICE))
        assert kind == LEGACY and "no executor" in reason
        with pytest.raises(ConfigError, match="no executor estimator"):
            choose_primitive("executor", get_fake_backend(DEVICE))
    kind, reason = choose_primitive("auto", get_fake_backend("fake_torino"))
    assert kind == LEGACY and "133-qubit" in reason
    ignored = applied_mitigation(LEGACY, True, {"resilience": {"measure_mitigation": True}})
    assert not any(ignored["techniques"].values()) and "ignores" in ignored["note"]
    server = applied_mitigation(LEGACY, False, {"resilience_level": 1})
    assert server["techniques"]["trex"] and "server side" in server["where"]


# -- end to end ----------------------------------------------------------------------------------
def test_plan_prints_what_would_be_sent_and_submits_nothing(
    trained_run, breast_dir, capsys, tmp_path, monkeypatch
):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    assert main(["hardware", "plan", str(trained_run), "--backend", DEVICE, *SMALL,
                 "--data-dir", breast_dir]) == 0  # fmt: skip
    assert not any(cwd.iterdir())  # no job record (hardware_jobs/), nothing written
    text = capsys.readouterr().out
    for expected in (
        "16 of the test split",
        "two-qubit gates",
        "physical [",
        "2 job(s) in one Batch",
        "parameter values (8, 1, 42)",
        "executor estimator",
        "QPU",
        "nothing was submitted",
    ):
        assert expected in text, expected


def test_submit_status_retrieve_report(done_record, trained_run, capsys):
    record = load_record(done_record)
    manifest = record.manifest
    # Manifest: backend, options, shots, indices, circuit, layout, versions, commit, jobs.
    assert manifest["backend"] == {
        "name": DEVICE, "num_qubits": 5, "local": True,
        "mode": "local testing mode (fake backend)",
    }  # fmt: skip
    assert manifest["settings"]["shots"] == 256
    assert manifest["execution"]["primitive"] == "executor"
    assert manifest["execution"]["options"]["resilience"] == {"measure_mitigation": True}
    assert manifest["inputs"]["indices"] == list(range(16))
    assert len(manifest["circuit"]["transpile"]["layout"]) == 4
    assert manifest["environment"]["packages"]["qiskit-ibm-runtime"] == "0.51.0"
    assert "git_commit" in manifest["environment"]
    assert [c["status"] for c in record.chunks] == [DONE, DONE]
    assert all(c["job_id"] and len(c["attempts"]) == 1 for c in record.chunks)
    assert all(c["applied"]["trex"] and c["applied"]["measure_twirling"] for c in record.chunks)
    # The ISA circuit round-trips through QPY with its parameters and layout.
    circuit = record.load_circuit()
    assert [p.name for p in circuit.parameters] == manifest["circuit"]["parameter_order"]
    assert circuit.layout is not None and circuit.num_qubits == 5
    for index in (0, 1):
        result = record.read_result(index)
        assert np.asarray(result["evs"]).shape == (8, 8)
        assert np.all(np.abs(result["evs"]) <= 1.5)

    assert main(["hardware", "status", str(done_record)]) == 0
    text = capsys.readouterr().out
    assert "2/2 chunk(s) have results; 0 would be submitted" in text

    before = _snapshot(done_record / "results")
    assert main(["hardware", "retrieve", str(done_record)]) == 0
    assert _snapshot(done_record / "results") == before  # nothing fetched or submitted again
    assert all(len(c["attempts"]) == 1 for c in load_record(done_record).chunks)

    assert main(["hardware", "report", str(done_record)]) == 0
    report = json.loads((done_record / "report.json").read_text())
    sources = report["comparison"]["sources"]
    assert set(sources) == {"exact", "noisy", "hardware"}
    for source in sources.values():
        assert 0.0 <= source["acc"] <= 1.0 and 0.0 <= source["auc"] <= 1.0
        assert 0.0 <= source["agreement_with_exact"] <= 1.0
    assert sources["exact"]["mae_vs_exact"] == 0.0
    assert 0.0 < sources["hardware"]["mae_vs_exact"] < 0.5
    assert report["references"]["noisy"]["same_circuit_as_hardware"] is True
    # Features, weights and binding are right: the exact source reproduces the trained run.
    own = np.load(trained_run / "predictions_test.npz")["y_score"][:16]
    np.testing.assert_allclose(report["predictions"]["y_score_exact"], own, atol=1e-5)
    markdown = (done_record / "report.md").read_text()
    assert "| hardware |" in markdown and "mitigation applied" in markdown
    assert "report.png" in markdown
    assert (done_record / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_job_error_is_recorded_and_only_that_chunk_resubmitted(
    trained_run, breast_dir, tmp_path, monkeypatch
):
    _fail_first_job(monkeypatch, "device calibration error (injected)")
    record = submit(_plan(trained_run, breast_dir), tmp_path, name="err")
    assert [c["status"] for c in record.chunks] == [FAILED, DONE]
    assert "injected" in record.chunks[0]["error"]
    states = chunk_states(record.path)
    assert [s["status"] for s in states] == [FAILED, DONE]
    kept = (record.path / "results" / "chunk-0001.json").read_bytes()

    record = retrieve(record.path)
    assert [c["status"] for c in record.chunks] == [DONE, DONE]
    assert [len(c["attempts"]) for c in record.chunks] == [2, 1]
    assert (record.path / "results" / "chunk-0001.json").read_bytes() == kept


def test_killed_between_submissions_resumes_only_the_missing_chunk(
    trained_run, breast_dir, tmp_path, monkeypatch
):
    from qiskit_ibm_runtime.executor_estimator import Estimator

    original = Estimator.run
    calls = {"n": 0}

    def dies_on_second(self, pubs, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # the process is killed during the second submission
        return original(self, pubs, **kwargs)

    monkeypatch.setattr(Estimator, "run", dies_on_second)
    plan = _plan(trained_run, breast_dir)
    with pytest.raises(KeyboardInterrupt):
        submit(plan, tmp_path, name="killed")
    monkeypatch.setattr(Estimator, "run", original)

    on_disk = load_record(tmp_path / "killed")  # the manifest on disk is whole and says so
    assert [c["status"] for c in on_disk.chunks] == [SUBMITTED, SUBMITTING]
    assert on_disk.chunks[0]["job_id"] and on_disk.chunks[1]["job_id"] is None
    first_job = on_disk.chunks[0]["job_id"]
    states = chunk_states(tmp_path / "killed")  # status: live state of the job that exists
    assert states[0]["job_state"] in ("RUNNING", "DONE") and states[1]["job_state"] is None
    handle = jobs.find_job(first_job, local=True)
    jobs.forget_local_jobs()  # as seen from another process
    assert chunk_states(tmp_path / "killed")[0]["job_state"] == jobs.NOT_FOUND
    jobs.register_local_job(handle)

    record = retrieve(tmp_path / "killed")
    assert [c["status"] for c in record.chunks] == [DONE, DONE]
    assert record.chunks[0]["job_id"] == first_job  # fetched, not submitted again
    assert [len(c["attempts"]) for c in record.chunks] == [1, 2]
    assert calls["n"] == 2


def test_local_jobs_of_an_ended_process_are_resubmitted(trained_run, breast_dir, tmp_path):
    record = submit(_plan(trained_run, breast_dir), tmp_path, name="lost")
    assert all(c["status"] == DONE for c in record.chunks)  # local mode always collects
    # Chunk 1's result file is lost, and so is the process that held its job.
    (record.path / "results" / "chunk-0001.json").unlink()
    jobs.forget_local_jobs()
    kept = (record.path / "results" / "chunk-0000.json").read_bytes()
    record = retrieve(record.path, resubmit=False)
    assert [c["status"] for c in record.chunks] == [DONE, LOST]
    assert "ended with the process" in record.chunks[1]["error"]
    record = retrieve(record.path)
    assert [c["status"] for c in record.chunks] == [DONE, DONE]
    assert (record.path / "results" / "chunk-0000.json").read_bytes() == kept


def test_corrupted_manifest_gives_clear_error_and_nothing_is_overwritten(
    done_record, tmp_path, capsys
):
    copy = tmp_path / "copy"
    shutil.copytree(done_record, copy)
    manifest = copy / "manifest.json"
    for broken in ('{"schema": "qhqcnn.hardware-job/1", "chunks": [', '{"schema": "other/9"}'):
        manifest.write_text(broken)
        before = _snapshot(copy)
        for action in ("status", "retrieve", "report"):
            assert main(["hardware", action, str(copy)]) == HardwareError.exit_code
            err = capsys.readouterr().err
            assert "manifest.json" in err and "left untouched" in err, err
            assert _snapshot(copy) == before
    with pytest.raises(JobRecordError, match="not a job record"):
        load_record(tmp_path)
    # Submitting into a directory that holds a record never overwrites it.
    shutil.copy(done_record / "manifest.json", manifest)
    with pytest.raises(JobRecordError, match="already holds a job record"):
        create_record(None, tmp_path, "copy")  # type: ignore[arg-type]


def test_classifier_file_missing_corrupt_or_from_an_older_record(done_record, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(done_record, copy)
    assert main(["hardware", "report", str(copy), "--no-noisy"]) == 0
    expected = json.loads((copy / "report.json").read_text())["comparison"]
    saved = load_record(copy).classifier_state()
    (copy / "classifier.npz").write_bytes(b"PK\x03\x04 truncated")
    assert main(["hardware", "report", str(copy), "--no-noisy"]) == HardwareError.exit_code
    assert "classifier.npz is corrupt" in capsys.readouterr().err
    (copy / "classifier.npz").unlink()
    assert main(["hardware", "report", str(copy), "--no-noisy"]) == HardwareError.exit_code
    assert "classifier.npz is missing" in capsys.readouterr().err
    # Records written before the .npz file keep the classifier as JSON, and still report.
    (copy / "classifier.json").write_text(json.dumps({k: v.tolist() for k, v in saved.items()}))
    assert main(["hardware", "report", str(copy), "--no-noisy"]) == 0
    report = json.loads((copy / "report.json").read_text())["comparison"]
    assert report["sources"]["hardware"]["auc"] == expected["sources"]["hardware"]["auc"]


def test_unknown_backend(trained_run, breast_dir, tmp_path, capsys):
    with pytest.raises(BackendError, match="unknown fake backend"):
        get_backend("fake_nowhere")
    code = main(
        ["hardware", "submit", str(trained_run), "--backend", "fake_nowhere", *SMALL,
         "--jobs-dir", str(tmp_path / "jobs"), "--data-dir", breast_dir]
    )  # fmt: skip
    assert code == BackendError.exit_code and "unknown fake backend" in capsys.readouterr().err
    assert not (tmp_path / "jobs").exists()


def test_no_credentials_fail_before_any_work(
    trained_run, breast_dir, tmp_path, monkeypatch, capsys
):
    import qhqcnn.hardware.plan as plan_module

    def no_work(*args, **kwargs):
        raise AssertionError("run inputs were loaded before the account was checked")

    monkeypatch.setattr(plan_module, "load_run_inputs", no_work)
    code = main(
        ["hardware", "submit", str(trained_run), "--backend", "ibm_torino", *SMALL,
         "--jobs-dir", str(tmp_path / "jobs"), "--data-dir", breast_dir]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == BackendError.exit_code and "no usable IBM Quantum credentials" in err
    assert "QISKIT_IBM_TOKEN" in err
    assert not (tmp_path / "jobs").exists()


def test_rejected_credentials_give_a_clear_error_without_the_token(monkeypatch):
    import qiskit_ibm_runtime

    from qhqcnn.backends.devices import runtime_service

    class Rejecting:
        def __init__(self, **kwargs):
            raise RuntimeError(f"401 Unauthorized: token {kwargs['token']} is not valid")

    monkeypatch.setenv("QISKIT_IBM_TOKEN", FAKE_TOKEN)
    monkeypatch.setattr(qiskit_ibm_runtime, "QiskitRuntimeService", Rejecting)
    with pytest.raises(BackendError, match="no usable IBM Quantum credentials") as caught:
        runtime_service()
    assert "401 Unauthorized" in str(caught.value) and FAKE_TOKEN not in str(caught.value)


def test_token_and_instance_never_reach_the_disk(trained_run, breast_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("QISKIT_IBM_TOKEN", FAKE_TOKEN)
    monkeypatch.setenv("QISKIT_IBM_INSTANCE", FAKE_INSTANCE)
    # A job error whose message quotes the credentials.
    _fail_first_job(monkeypatch, f"401 for token {FAKE_TOKEN} on instance {FAKE_INSTANCE}")
    record = submit(_plan(trained_run, breast_dir), tmp_path / "jobs", name="secret")
    assert record.chunks[0]["status"] == FAILED and "***" in record.chunks[0]["error"]
    retrieve(record.path)
    assert main(["hardware", "report", str(record.path), "--no-noisy"]) == 0
    files = [p for p in (tmp_path / "jobs").rglob("*") if p.is_file()]
    assert len(files) >= 8
    for path in files:
        data = path.read_bytes()
        for secret in (FAKE_TOKEN, FAKE_INSTANCE, "fake0instance0secret"):
            assert secret.encode() not in data, f"{secret} written to {path}"


def test_mitigation_that_really_ran_is_recorded(trained_run, breast_dir, tmp_path):
    # Legacy EstimatorV2 in local mode: every mitigation option is ignored, and we say so.
    legacy = submit(
        _plan(
            trained_run,
            breast_dir,
            limit=4,
            primitive="legacy",
            max_params_per_pub=2,
            max_pubs_per_job=2,
        ),
        tmp_path,
        name="legacy",
    )
    execution = legacy.manifest["execution"]
    assert execution["primitive"] == "legacy" and "EstimatorV2" in execution["primitive_class"]
    assert not any(execution["mitigation_applied"]["techniques"].values())
    assert any("no effect in local testing mode" in w for w in execution["warnings"])
    assert len(legacy.chunks) == 1 and legacy.chunks[0]["pubs"] == [[0, 2], [2, 4]]
    assert legacy.chunks[0]["status"] == DONE  # two PUBs in one job, concatenated in order
    assert np.asarray(legacy.read_result(0)["evs"]).shape == (4, 8)
    # The executor applies ZNE and DD on this machine: the result's own options confirm it.
    executor = _plan(trained_run, breast_dir, limit=2, shots=128, mitigation=("zne", "dd"))
    record = submit(executor, tmp_path, name="zne")
    applied = record.chunks[0]["applied"]
    assert applied["zne"] and applied["dd"] and not applied["trex"]
    result = record.read_result(0)
    assert result["metadata"]["options"]["resilience"]["zne_mitigation"] is True


class _StubJob:
    """A real-device job as the service reports it: string states, results on demand."""

    def __init__(self, job_id: str, state: str, evs=None, error: str = "") -> None:
        self._id, self.state, self._evs, self._error = job_id, state, evs, error
        self.fetch_fails = False

    def job_id(self) -> str:
        return self._id

    def status(self) -> str:
        return self.state

    def error_message(self) -> str:
        return self._error

    def usage(self) -> float:
        return 3.5

    def result(self):
        from qiskit.primitives.containers import DataBin, PrimitiveResult, PubResult

        if self.state != "DONE" or self.fetch_fails:
            raise RuntimeError(f"job {self._id} is {self.state}; connection reset")
        data = DataBin(evs=self._evs, stds=np.full(self._evs.shape, 0.02), shape=self._evs.shape)
        options = {"resilience": {"measure_mitigation": True}, "twirling": {"enable_measure": True}}
        return PrimitiveResult([PubResult(data)], metadata={"options": options, "shots": 256})


class _StubService:
    """``QiskitRuntimeService`` as far as status/retrieve use it: job(id), jobs(job_tags)."""

    def __init__(self, jobs_by_id: dict[str, _StubJob], tagged: dict[str, _StubJob]) -> None:
        self.jobs_by_id, self.tagged = jobs_by_id, tagged

    def job(self, job_id: str) -> _StubJob:
        if job_id not in self.jobs_by_id:
            raise RuntimeError(f"Job not found: {job_id}")
        return self.jobs_by_id[job_id]

    def jobs(self, job_tags=None, limit=10):
        return [job for tag, job in self.tagged.items() if tag in (job_tags or [])][:limit]

    def active_account(self):
        return {"token": "stub-account-token-123456", "instance": "stub-instance-crn-7890"}


def test_real_device_states_through_the_service(done_record, tmp_path, capsys):
    """The real path's bookkeeping: string states, queued/failed/cancelled, lost ids recovered."""
    copy = tmp_path / "real"
    shutil.copytree(done_record, copy)
    for name in ("chunk-0000.json", "chunk-0001.json"):
        (copy / "results" / name).unlink()
    record = load_record(copy)
    record.manifest["backend"].update(name="ibm_fake_device", local=False)
    record.chunks[0].update(status=SUBMITTED, job_id="job-a")
    record.chunks[1].update(status=SUBMITTING, job_id=None)  # killed before its id was saved
    record.save()
    evs = np.linspace(-0.5, 0.5, 64).reshape(8, 8)
    job_a, job_b = _StubJob("job-a", "QUEUED", evs), _StubJob("job-b", "RUNNING", evs)
    service = _StubService(
        {"job-a": job_a, "job-b": job_b}, {f"{record.manifest['id']}-chunk-1": job_b}
    )

    # Without credentials, a real record cannot even be looked at.
    assert main(["hardware", "status", str(copy)]) == BackendError.exit_code
    assert "no usable IBM Quantum credentials" in capsys.readouterr().err

    states = chunk_states(copy, service=service)
    assert [s["job_state"] for s in states] == ["QUEUED", None]
    record = retrieve(copy, resubmit=False, service=service)
    assert [c["status"] for c in record.chunks] == [SUBMITTED, SUBMITTED]
    assert record.chunks[1]["job_id"] == "job-b"  # found again by its job tags

    job_a.state, job_a.fetch_fails = "DONE", True  # it ran; only the download fails
    record = retrieve(copy, resubmit=False, service=service)
    assert record.chunks[0]["status"] == SUBMITTED  # fetched again later, never paid twice
    assert "result not fetched" in record.manifest["events"][-1]["message"]

    job_a.fetch_fails, job_b.state = False, "ERROR"
    job_b._error = "Error code 1517; stub-account-token-123456 rejected"
    record = retrieve(copy, resubmit=False, service=service)
    assert [c["status"] for c in record.chunks] == [DONE, FAILED]
    assert "1517" in record.chunks[1]["error"] and "stub-account-token" not in json.dumps(
        record.manifest
    )
    np.testing.assert_allclose(record.read_result(0)["evs"], evs)
    assert record.read_result(0)["usage"]["usage"] == 3.5
    assert record.chunks[0]["applied"]["trex"] is True

    record.chunks[1].update(status=SUBMITTED, job_id="job-b")
    record.save()
    job_b.state = "CANCELLED"
    record = retrieve(copy, resubmit=False, service=service)
    assert record.chunks[1]["status"] == "cancelled"
    del service.jobs_by_id["job-a"]  # results already saved: the service is not asked again
    record = retrieve(copy, resubmit=False, service=service)
    assert record.chunks[0]["status"] == DONE


def test_qcnn_and_quanv_runs_are_validated_like_hqcnn(breast_dir, tmp_path):
    def train(model):
        out = tmp_path / model
        code = main(
            ["train", "--dataset", "breastmnist", "--model", model, "--max-train", "64",
             "--max-eval", "32", "--epochs", "1", "--out", str(out), "--no-progress",
             "--data-dir", breast_dir]
        )  # fmt: skip
        assert code == 0
        return out

    def validate(run, limit, per_pub):
        jobs_dir = tmp_path / "jobs"
        code = main(
            ["hardware", "submit", str(run), "--backend", DEVICE, "--limit", str(limit),
             "--shots", "256", "--max-params-per-pub", str(per_pub), "--seed-simulator", "7",
             "--jobs-dir", str(jobs_dir), "--name", run.name, "--data-dir", breast_dir]
        )  # fmt: skip
        assert code == 0
        jobs.forget_local_jobs()
        assert main(["hardware", "report", str(jobs_dir / run.name)]) == 0
        report = json.loads((jobs_dir / run.name / "report.json").read_text())
        # The exact source reproduces the run's own test predictions of those images.
        own = np.load(run / "predictions_test.npz")["y_score"][:limit]
        np.testing.assert_allclose(report["predictions"]["y_score_exact"], own, atol=1e-5)
        assert report["predictions"]["image_indices"] == list(range(limit))
        assert set(report["comparison"]["sources"]) == {"exact", "noisy", "hardware"}
        return load_record(jobs_dir / run.name), report

    record, report = validate(train("qcnn"), 8, 8)
    assert record.rows_per_image == 1 and report["n_images"] == 8

    # quanv: one parameter set per 2×2 patch (196 per image); PUBs hold whole images, so 400
    # parameter sets per PUB gives 2 images in the first job and 1 in the second.
    record, report = validate(train("quanv"), 3, 400)
    assert record.rows_per_image == 196 and report["n_images"] == 3
    assert [(c["start"], c["stop"]) for c in record.chunks] == [(0, 392), (392, 588)]
    assert [record.image_span(c) for c in record.chunks] == [(0, 2), (2, 3)]
    result = record.read_result(1)
    assert result["image_indices"] == [2] and np.asarray(result["evs"]).shape == (196, 4)
    hardware = report["comparison"]["sources"]["hardware"]
    assert hardware["mae_vs_exact"] < 0.2  # a 4-qubit filter under fake_manila's noise
