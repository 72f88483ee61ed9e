"""Write the reference pages: ``python -m qhqcnn.cli.docs [--check]``.

``docs/cli.md`` is every command and subcommand's ``--help`` text, at a fixed width, so the
page is the same on every machine with the same Python version (argparse's layout differs
slightly between versions). ``docs/reference.md`` is the public Python API (``qhqcnn.__all__``)
with each name's signature and docstring. ``tests/test_docs_cli.py`` fails when either is stale.
"""

from __future__ import annotations

import argparse
import functools
import platform
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from qhqcnn.io.files import atomic_write_text

DOCS = Path(__file__).resolve().parents[2] / "docs"
DEFAULT_PATH = DOCS / "cli.md"
REFERENCE_PATH = DOCS / "reference.md"
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


def _signature(value: object) -> str:
    import inspect

    try:
        return str(inspect.signature(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return ""


def api_markdown() -> str:
    """The Markdown reference of the public API: every name of ``qhqcnn.__all__``, grouped by
    the module that defines it, with its signature and docstring."""
    import inspect

    import qhqcnn

    by_module: dict[str, list[str]] = {}
    for name in qhqcnn.__all__:
        if name != "__version__":
            by_module.setdefault(qhqcnn._EXPORTS[name], []).append(name)
    lines = [
        "# Python API reference",
        "",
        f"Generated from the docstrings by `{COMMAND}`; `tests/test_docs_cli.py` fails when this",
        "page no longer matches the code. Worked examples: [api.md](api.md).",
        "",
        "Every name below is importable from the package itself (`from qhqcnn import NAME`).",
    ]
    for module in sorted(by_module, key=lambda m: list(qhqcnn._EXPORTS.values()).index(m)):
        lines += ["", f"## `{module}`"]
        for name in by_module[module]:
            value = getattr(qhqcnn, name)
            kind = "class" if inspect.isclass(value) else "function"
            lines += ["", f"### `{name}{_signature(value)}`", "", f"*{kind}*", ""]
            lines.append(inspect.getdoc(value) or "")
            if inspect.isclass(value):
                for member, attribute in sorted(vars(value).items()):
                    if member.startswith("_") or not callable(attribute):
                        continue
                    doc = inspect.getdoc(attribute)
                    if doc:
                        first = doc.split("\n\n")[0].replace("\n", " ")
                        lines.append(f"- `{member}{_signature(attribute)}`: {first}")
    return "\n".join(lines) + "\n"


def _check_or_write(path: Path, text: str, check: bool) -> bool:
    """``True`` when ``path`` holds ``text`` (``check``) or was written."""
    if check:
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current != text:
            print(f"{path} is stale: run `{COMMAND}`", file=sys.stderr)
            return False
        print(f"{path} is up to date")
        return True
    atomic_write_text(path, text)
    print(f"wrote {path}")
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(DEFAULT_PATH), help="where to write the CLI page")
    parser.add_argument(
        "--reference", default=str(REFERENCE_PATH), help="where to write the API reference page"
    )
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a page is stale"
    )
    args = parser.parse_args(argv)
    fresh = [
        _check_or_write(Path(args.out), cli_markdown(), args.check),
        _check_or_write(Path(args.reference), api_markdown(), args.check),
    ]
    return 0 if all(fresh) else 1


if __name__ == "__main__":
    sys.exit(main())
