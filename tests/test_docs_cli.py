"""docs/cli.md is generated from the CLI's parsers and must match them."""

from __future__ import annotations

import re
from pathlib import Path

from qhqcnn.cli.docs import cli_markdown, main, python_version, walk_parsers
from qhqcnn.cli.main import build_parser

CLI_PAGE = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
STALE = "docs/cli.md is stale: regenerate it with `python -m qhqcnn.cli.docs`"


def test_cli_page_matches_the_parsers() -> None:
    page = CLI_PAGE.read_text(encoding="utf-8")
    for parser in walk_parsers(build_parser()):
        assert f"## `{parser.prog}`" in page, f"{parser.prog} is not documented. {STALE}"
    recorded = re.search(r"\(Python (\d+\.\d+)\)", page)
    if recorded and recorded.group(1) != python_version():
        return  # argparse lays help out differently in other Python versions: commands only
    assert page == cli_markdown(), STALE


def test_docs_cli_writes_and_checks(tmp_path: Path) -> None:
    out = tmp_path / "cli.md"
    assert main(["--out", str(out), "--check"]) == 1
    assert main(["--out", str(out)]) == 0
    assert main(["--out", str(out), "--check"]) == 0
    text = out.read_text(encoding="utf-8")
    assert "## `qhqcnn circuits export`" in text and "## `qhqcnn report`" in text
    assert "usage: qhqcnn train" in text
