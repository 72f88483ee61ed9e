"""docs/cli.md and docs/reference.md are generated from the code and must match it."""

from __future__ import annotations

import re
from pathlib import Path

from qhqcnn.cli.docs import api_markdown, cli_markdown, main, python_version, walk_parsers
from qhqcnn.cli.main import build_parser

CLI_PAGE = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
REFERENCE_PAGE = CLI_PAGE.with_name("reference.md")
STALE = "docs/cli.md is stale: regenerate it with `python -m qhqcnn.cli.docs`"


def test_cli_page_matches_the_parsers() -> None:
    page = CLI_PAGE.read_text(encoding="utf-8")
    for parser in walk_parsers(build_parser()):
        assert f"## `{parser.prog}`" in page, f"{parser.prog} is not documented. {STALE}"
    recorded = re.search(r"\(Python (\d+\.\d+)\)", page)
    if recorded and recorded.group(1) != python_version():
        return  # argparse lays help out differently in other Python versions: commands only
    assert page == cli_markdown(), STALE


def test_api_reference_matches_the_docstrings() -> None:
    page = REFERENCE_PAGE.read_text(encoding="utf-8")
    assert page == api_markdown(), "docs/reference.md is stale: run `python -m qhqcnn.cli.docs`"
    for name in ("QuantumLayer", "CircuitTemplate", "train", "evaluate_run", "ArrayDataset"):
        assert f"### `{name}" in page


def test_docs_cli_writes_and_checks(tmp_path: Path) -> None:
    out, reference = tmp_path / "cli.md", tmp_path / "reference.md"
    paths = ["--out", str(out), "--reference", str(reference)]
    assert main([*paths, "--check"]) == 1
    assert main(paths) == 0
    assert main([*paths, "--check"]) == 0
    text = out.read_text(encoding="utf-8")
    assert "## `qhqcnn circuits export`" in text and "## `qhqcnn report`" in text
    assert "usage: qhqcnn train" in text
