"""Write ``docs/cli.md`` from the CLI's own parsers: ``python -m qhqcnn.cli.docs [--check]``.

Every command and subcommand's ``--help`` text, at a fixed width, so the page is the same on
every machine with the same Python version (argparse's layout differs slightly between
versions). ``tests/test_docs_cli.py`` fails when the page is stale.
"""

from __future__ import annotations

import argparse
import functools
import platform
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from qhqcnn.io.files import atomic_write_text

DEFAULT_PATH = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
WIDTH = 100
COMMAND = "python -m qhqcnn.cli.docs"


def python_version() -> str:
    return ".".join(platform.python_version_tuple()[:2])


def walk_parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """``parser`` and every subcommand parser under it, depth first, in definition order."""
    yield parser
    seen: set[int] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                if id(sub) not in seen:  # aliases map to the same parser
                    seen.add(id(sub))
                    yield from walk_parsers(sub)


def _anchor(prog: str) -> str:
    return prog.lower().replace(" ", "-")


def cli_markdown(parser: argparse.ArgumentParser | None = None) -> str:
    """The Markdown reference of every command of ``parser`` (default: ``qhqcnn``'s)."""
    if parser is None:
        from qhqcnn.cli.main import build_parser

        parser = build_parser()
    parsers = list(walk_parsers(parser))
    lines = [
        "# Command-line reference",
        "",
        f"Generated from the argument parsers by `{COMMAND}` (Python {python_version()});",
        "`tests/test_docs_cli.py` fails when this page no longer matches the CLI.",
        "",
    ]
    lines += [f"- [`{p.prog}`](#{_anchor(p.prog)})" for p in parsers]
    for p in parsers:
        p.formatter_class = functools.partial(p.formatter_class, width=WIDTH)
        lines += ["", f"## `{p.prog}`", "", "```text", p.format_help().rstrip(), "```"]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(DEFAULT_PATH), help="where to write the page")
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if the page is stale"
    )
    args = parser.parse_args(argv)
    text, path = cli_markdown(), Path(args.out)
    if args.check:
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current != text:
            print(f"{path} is stale: run `{COMMAND}`", file=sys.stderr)
            return 1
        print(f"{path} is up to date")
        return 0
    atomic_write_text(path, text)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
