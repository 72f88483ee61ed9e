"""docs/api.md is executable documentation: its code blocks run here, in order, as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

API_DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", API_DOC.read_text(encoding="utf-8"), re.S)


def test_api_doc_has_the_five_tasks():
    text = API_DOC.read_text(encoding="utf-8")
    for heading in ("## 1.", "## 2.", "## 3.", "## 4.", "## 5."):
        assert heading in text
    assert len(_blocks()) >= 8


@pytest.mark.slow
def test_api_doc_code_blocks_run(tmp_path, monkeypatch, breast_dir):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("QHQCNN_DATA_DIR", str(breast_dir))
    namespace: dict = {"__name__": "__api_doc__"}
    for number, block in enumerate(_blocks(), start=1):
        try:
            exec(compile(block, f"docs/api.md, code block {number}", "exec"), namespace)
        except Exception as exc:  # name the block in the failure
            raise AssertionError(f"docs/api.md code block {number} failed: {exc!r}") from exc
    # what the blocks promise to leave behind
    assert (tmp_path / "runs" / "api-breast" / "metrics_test.json").exists()
    assert (tmp_path / "runs" / "api-export" / "trained.qpy").exists()
