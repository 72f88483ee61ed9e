"""The package face: fast lazy imports, no import traps, documented public names."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import qhqcnn

REPO_ROOT = Path(__file__).resolve().parents[1]
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
}


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=300
    )


def test_import_is_light_and_fast():
    result = _run(
        "import sys, time\n"
        "t = time.perf_counter(); import qhqcnn, qhqcnn.config; t = time.perf_counter() - t\n"
        "heavy = [m for m in ('torch', 'qiskit', 'medmnist', 'sklearn') if m in sys.modules]\n"
        "print(f'{t:.3f}', ','.join(heavy))"
    )
    assert result.returncode == 0, result.stderr
    seconds, heavy = result.stdout.split() + [""] * (2 - len(result.stdout.split()))
    assert heavy == "", f"import qhqcnn loaded {heavy}"
    assert float(seconds) < 0.5


def test_help_and_version_are_fast():
    for flag in ("--help", "--version"):
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "qhqcnn", flag], env=ENV, capture_output=True, text=True
        )
        elapsed = time.perf_counter() - started
        assert result.returncode == 0, result.stderr
        assert elapsed < 1.5, f"qhqcnn {flag} took {elapsed:.2f} s"
    assert qhqcnn.__version__ in result.stdout


def test_medmnist_still_imports_fully_after_qhqcnn():
    result = _run(
        "import qhqcnn\n"
        "from qhqcnn.data import medmnist_info\n"
        "from qhqcnn.training.metrics import medmnist_metrics\n"
        "import numpy as np\n"
        "medmnist_metrics(np.array([0, 1]), np.array([[0.9, 0.1], [0.2, 0.8]]), 'binary-class')\n"
        "from medmnist import Evaluator, BreastMNIST, INFO\n"
        "import medmnist\n"
        "assert medmnist.INFO is medmnist_info.INFO and hasattr(medmnist, 'Evaluator')\n"
        "import sys; assert 'torchvision' not in sys.modules\n"
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", [n for n in qhqcnn.__all__ if n != "__version__"])
def test_every_public_name_resolves_and_is_documented(name):
    value = getattr(qhqcnn, name)
    doc = inspect.getdoc(value)
    assert doc and len(doc) > 20, f"qhqcnn.{name} has no docstring"


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError):
        qhqcnn.no_such_thing  # noqa: B018


def test_no_import_cycles_between_stages():
    """Lower stages never import higher ones (data → circuits → backends → nn → models →
    training → evaluation → study/hardware/export/reporting → cli)."""
    order = [
        "data",
        "circuits",
        "engine",
        "backends",
        "noise",
        "nn",
        "models",
        "training",
        "evaluation",
        "study",
        "export",
        "reporting",
        "hardware",
        "cli",
    ]
    allowed_upward = {
        # train() ends by evaluating the best checkpoint (the pipeline sits above both)
        ("training", "evaluation"),
        # circuit drawings are written with the reporting module's deterministic figure saver
        ("export", "reporting"),
        # the study draws its figure beside results.md with the same figure helpers
        ("study", "reporting"),
    }
    rank = {stage: i for i, stage in enumerate(order)}
    offenders = []
    for path in (REPO_ROOT / "qhqcnn").rglob("*.py"):
        parts = path.relative_to(REPO_ROOT / "qhqcnn").parts
        if len(parts) < 2 or parts[0] not in rank:
            continue
        stage = parts[0]
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if not line.startswith(("from qhqcnn.", "import qhqcnn.")):
                continue
            target = line.split()[1].split(".")[1]
            if (
                target in rank
                and rank[target] > rank[stage]
                and (stage, target) not in allowed_upward
            ):
                offenders.append(f"{path.relative_to(REPO_ROOT)}: {line}")
    assert offenders == []
