"""Every command shown in the docs is run, in order, and must exit 0.

What is run (the extraction rule):

* **Files**: every ``docs/*.md`` and ``README.md``. In ``README.md`` only the blocks under the
  headings ``## Data directory`` and ``## A short tour of the CLI`` are run: its other blocks
  are set-up (``pip install`` plus the full 40-epoch default training; ``python -m pytest``
  itself) and the real-IBM hardware example (credentials and a real device), which
  ``docs/tutorial.md`` runs on a fake device instead.
* **Blocks**: only fenced blocks opened with exactly ```` ```bash ````. Output, usage text and
  diagrams go in ```` ```text ```` blocks (``docs/cli.md`` is all ``text``); other shell fences
  (``sh``, ``shell``, ``console``, …) are refused by a test, so no command hides from the runner.
* **Commands**: one per line, ``\\`` continuations joined; blank lines and ``#`` comment lines
  are skipped. A command ending in ``# not run by tests: <reason>`` is skipped (keep those rare
  and honest: a reason is required). Lines starting with ``pip `` are set-up, never run.
  A ``qhqcnn train``/``reproduce`` without ``--epochs`` (or ``--resume``, or ``--config``, whose
  file sets the epochs) would run the 40-epoch default, far beyond this test's budget: the file
  fails at once, naming it.

How they run: per file, in a fresh temporary working directory (``runs/`` and
``hardware_jobs/`` are created there; nothing is copied into it), with ``QHQCNN_DATA_DIR`` set
to the real data directory (an ``export QHQCNN_DATA_DIR=…`` line, whose path in the docs is a
placeholder, sets it to that directory too; other ``export`` lines are applied as written).
A plain ``qhqcnn …`` line (no shell syntax beyond quoting) runs in this process through
``qhqcnn.cli.main.main`` — one start-up instead of one per command — with the local hardware job
handles dropped afterwards, as ending a process does; any other line runs under ``bash -e``.
A file whose commands name a ``--dataset`` missing from the data directory is skipped.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from qhqcnn.cli.main import main

REPO_ROOT = Path(__file__).resolve().parents[1]
README_SECTIONS = ("Data directory", "A short tour of the CLI")
NOT_RUN = re.compile(r"#\s*not run by tests:(.*)$")
OPERATOR_CHARS = "();<>|&"
EXPANSION = re.compile(r"[$`*?~{}\[\]]")  # expansions bash would make
OTHER_SHELL_FENCE = re.compile(r"^\s*```\s*(sh|shell|console|zsh|bash-session|shell-session)\b")


@dataclass(frozen=True)
class Command:
    path: str  # relative to the repository root
    line: int  # first line of the command in the file
    text: str  # the command, continuations joined, comments kept
    skip_reason: str | None = None

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.text}"


def doc_files() -> list[Path]:
    return sorted((REPO_ROOT / "docs").glob("*.md")) + [REPO_ROOT / "README.md"]


def extract_commands(path: Path) -> list[Command]:
    """The commands of ``path``'s ```bash blocks, in order (see the module docstring)."""
    rel = path.relative_to(REPO_ROOT).as_posix()
    only_sections = README_SECTIONS if rel == "README.md" else None
    commands: list[Command] = []
    section = None
    fence: str | None = None  # the info string of the block we are in
    pending: list[str] = []
    pending_line = 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        stripped = line.strip()
        if fence is None:
            if stripped.startswith("```"):
                fence = stripped[3:].strip()
            elif line.startswith("## "):
                section = line[3:].strip()
            continue
        if stripped.startswith("```"):
            if pending:
                raise ValueError(f"{rel}:{pending_line}: a `\\` continuation runs off its block")
            fence = None
            continue
        if fence != "bash" or (only_sections is not None and section not in only_sections):
            continue
        if not pending:
            if not stripped or stripped.startswith("#"):
                continue
            pending_line = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].rstrip())
            continue
        pending.append(stripped)
        text = " ".join(pending)
        pending = []
        commands.append(_command(rel, pending_line, text))
    return commands


def _command(rel: str, line: int, text: str) -> Command:
    mark = NOT_RUN.search(text)
    if mark:
        reason = mark.group(1).strip()
        if not reason:
            raise ValueError(f"{rel}:{line}: `# not run by tests:` needs a reason")
        return Command(rel, line, text, skip_reason=reason)
    if text.startswith("pip "):
        return Command(rel, line, text, skip_reason="set-up (installs packages)")
    return Command(rel, line, text)


def _words(text: str) -> list[str]:
    return shlex.split(text, comments=True)


def _is_plain_qhqcnn(text: str) -> bool:
    """A ``qhqcnn …`` line with no shell syntax beyond quoting and a trailing comment."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    tokens = list(lexer)
    if not tokens or tokens[0] != "qhqcnn":
        return False
    operators = any(token and set(token) <= set(OPERATOR_CHARS) for token in tokens)
    return not operators and not any(EXPANSION.search(token) for token in tokens)


def _datasets(commands: list[Command]) -> set[str]:
    names = set()
    for command in commands:
        if command.skip_reason:
            continue
        words = _words(command.text)
        for flag, value in zip(words, words[1:], strict=False):
            if flag == "--dataset":
                names.add(value)
            if flag == "--datasets":
                names.update(v for v in value.split(",") if v)
    return names


def _full_length_trainings(commands: list[Command]) -> list[Command]:
    """``train``/``reproduce`` commands that would run the 40-epoch default (not ``--resume``,
    nor ``--config``: the file sets the epochs)."""
    found = []
    for command in commands:
        words = [] if command.skip_reason else _words(command.text)
        if words[:2] in (["qhqcnn", "train"], ["qhqcnn", "reproduce"]):
            if not {"--epochs", "--resume", "--config"} & set(words):
                found.append(command)
    return found


DOCS_WITH_COMMANDS = [p for p in doc_files() if any(not c.skip_reason for c in extract_commands(p))]


def _run_in_process(argv: list[str]) -> int:
    from qhqcnn.hardware import jobs

    try:
        return main(argv)
    except SystemExit as exc:  # argparse errors and --help
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        jobs.forget_local_jobs()  # what ending the `qhqcnn` process does


def _apply_export(text: str, data_dir: Path, monkeypatch) -> None:
    for assignment in _words(text)[1:]:
        name, sep, value = assignment.partition("=")
        if not sep:
            continue  # `export NAME` of an existing variable: nothing to do here
        if name == "QHQCNN_DATA_DIR":
            value = str(data_dir)  # the docs show a placeholder path
        monkeypatch.setenv(name, os.path.expandvars(value))


@pytest.mark.slow
@pytest.mark.timeout(420)
@pytest.mark.parametrize(
    "doc", DOCS_WITH_COMMANDS, ids=[p.relative_to(REPO_ROOT).as_posix() for p in DOCS_WITH_COMMANDS]
)
def test_doc_commands_run(doc: Path, data_dir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    commands = extract_commands(doc)
    missing = sorted(d for d in _datasets(commands) if not (data_dir / f"{d}.npz").exists())
    if missing:
        pytest.skip(f"{doc.name} needs {', '.join(missing)} in {data_dir}")
    too_long = _full_length_trainings(commands)
    assert not too_long, (
        "these commands train for the default 40 epochs, far beyond this test's budget: give "
        "them small settings (--epochs, --max-train) or end them with "
        "`# not run by tests: <reason>`:\n" + "\n".join(map(str, too_long))
    )
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("QHQCNN_DATA_DIR", str(data_dir))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    for command in commands:
        if command.skip_reason:
            print(f"skipped {command}  ({command.skip_reason})")
            continue
        print(f"$ {command.text}   [{command.path}:{command.line}]", flush=True)
        words = _words(command.text)
        if words and words[0] == "export":
            _apply_export(command.text, data_dir, monkeypatch)
            continue
        if _is_plain_qhqcnn(command.text):
            code = _run_in_process(words[1:])
            output = capsys.readouterr()
            log = output.out + output.err
        else:
            done = subprocess.run(
                ["bash", "-e", "-c", command.text],
                cwd=work,
                env=dict(os.environ),
                capture_output=True,
                text=True,
                timeout=400,
            )
            code, log = done.returncode, done.stdout + done.stderr
        assert code == 0, f"exit {code}: {command}\n--- output (tail) ---\n{log[-4000:]}"


def test_extractor_finds_the_documented_commands() -> None:
    tutorial = extract_commands(REPO_ROOT / "docs" / "tutorial.md")
    assert any(c.text.startswith("export QHQCNN_DATA_DIR=") for c in tutorial)
    assert any(c.text.startswith("qhqcnn hardware report") for c in tutorial)
    readme = extract_commands(REPO_ROOT / "README.md")
    assert readme[0].text.startswith("export QHQCNN_DATA_DIR=")
    assert all(c.text.startswith("qhqcnn ") for c in readme[1:]), readme
    assert not any("pip install" in c.text or "pytest" in c.text for c in readme)
    # the generated CLI reference is usage text in ```text blocks: no commands
    assert extract_commands(REPO_ROOT / "docs" / "cli.md") == []


def test_extraction_rules(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(f"{__name__}.REPO_ROOT", tmp_path)
    page = tmp_path / "page.md"
    page.write_text(
        "```text\nqhqcnn train --usage-not-a-command\n```\n"
        "```bash\n# a comment\nqhqcnn info    # trailing comment\n\n"
        "qhqcnn train --epochs 1 \\\n    --max-train 8\n"
        "qhqcnn train --dataset pathmnist   # not run by tests: PathMNIST is not here\n"
        "pip install something\n```\n",
        encoding="utf-8",
    )
    commands = extract_commands(page)
    assert [(c.line, c.text, c.skip_reason is None) for c in commands] == [
        (6, "qhqcnn info    # trailing comment", True),
        (8, "qhqcnn train --epochs 1 --max-train 8", True),
        (10, "qhqcnn train --dataset pathmnist   # not run by tests: PathMNIST is not here", False),
        (11, "pip install something", False),
    ]
    assert commands[2].skip_reason == "PathMNIST is not here"
    assert [c.line for c in _full_length_trainings(commands)] == []
    assert _full_length_trainings([Command("p", 1, "qhqcnn train --dataset breastmnist")])
    assert not _full_length_trainings([Command("p", 1, "qhqcnn train --out r --resume")])
    page.write_text("```bash\nqhqcnn info  # not run by tests:\n```\n", encoding="utf-8")
    with pytest.raises(ValueError, match="needs a reason"):
        extract_commands(page)
    assert _is_plain_qhqcnn("qhqcnn noise show 'a:p=1+b:p=2'  # note")
    assert not _is_plain_qhqcnn("qhqcnn info | head")
    assert not _is_plain_qhqcnn('qhqcnn info --data-dir "$HOME/x"')


def test_no_shell_block_hides_from_the_runner() -> None:
    """Shell commands go in ```bash blocks, which the runner reads; no other shell fences."""
    for path in doc_files():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            assert not OTHER_SHELL_FENCE.match(line), (
                f"{path.relative_to(REPO_ROOT)}:{number}: use ```bash for commands "
                "(tests/test_docs_commands.py runs them) or ```text for output"
            )
