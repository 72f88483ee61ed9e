"""Content hashes of the files the package writes, recorded at write time, checked at load.

A directory's hashes live in ``checksums.json`` beside the files: ``{name: [sha256, ...]}``.
A file verifies when its SHA-256 is one of the hashes listed for it. While a file is being
replaced, both its old and new hash are listed (the list is written *before* the rename and
trimmed to the new hash after it), so a process killed at any instant leaves a file that
verifies; a file changed by anything else (a flipped bit, a truncated copy, an edit) does not.
Files without an entry (written before hashes were recorded) are accepted as they are.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from qhqcnn.errors import IntegrityError
from qhqcnn.io.files import atomic_write, atomic_write_text

CHECKSUMS_FILE = "checksums.json"


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Checksums:
    """The ``checksums.json`` of one directory (names are relative to it)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    @property
    def path(self) -> Path:
        return self.directory / CHECKSUMS_FILE

    def load(self) -> dict[str, list[str]]:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise IntegrityError(
                f"{self.path} is corrupt ({exc}); its files cannot be verified"
            ) from None
        if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
            raise IntegrityError(f"{self.path} is not a checksum record")
        return data

    def _save(self, table: dict[str, list[str]]) -> None:
        atomic_write_text(self.path, json.dumps(table, indent=1, sort_keys=True) + "\n")

    def _name(self, path: str | os.PathLike[str]) -> str:
        return Path(path).resolve().relative_to(self.directory.resolve()).as_posix()

    def expected(self, path: str | os.PathLike[str]) -> list[str] | None:
        """The hashes ``path`` may have (``None``: none recorded)."""
        return self.load().get(self._name(path))

    def record(self, path: str | os.PathLike[str]) -> str:
        """Record the current content of ``path`` as its only valid content."""
        digest = sha256_file(path)
        table = self.load()
        table[self._name(path)] = [digest]
        self._save(table)
        return digest

    def forget(self, path: str | os.PathLike[str]) -> None:
        table = self.load()
        if table.pop(self._name(path), None) is not None:
            self._save(table)

    def verify(self, path: str | os.PathLike[str], what: str = "file") -> str | None:
        """Raise :class:`~qhqcnn.errors.IntegrityError` unless ``path`` has a recorded hash.

        Returns the file's hash (``None`` when none is recorded: nothing to check against).
        """
        expected = self.expected(path)
        if expected is None:
            return None
        actual = sha256_file(path)
        if actual not in expected:
            raise IntegrityError(
                f"{path} is corrupt: its SHA-256 {actual[:16]}… differs from the one recorded "
                f"when it was written ({expected[-1][:16]}…); the {what} was changed or damaged "
                "after it was saved"
            )
        return actual

    def is_valid(self, path: str | os.PathLike[str]) -> bool:
        """Whether ``path`` exists and verifies (a file without a record verifies)."""
        if not Path(path).is_file():
            return False
        try:
            self.verify(path)
        except (IntegrityError, OSError):
            return False
        return True

    def write(
        self,
        path: str | os.PathLike[str],
        write: Callable[[Path], None],
        *,
        keep_previous: str | os.PathLike[str] | None = None,
    ) -> Path:
        """Write ``path`` atomically (``write(tmp)``) and record its hash, crash-safely.

        ``keep_previous``: first move the current ``path`` there (its hash moves with it), so
        the version before this one stays available as a fallback; a current file that does
        not verify is overwritten instead, never kept as the fallback.
        """
        target = Path(path)
        previous = Path(keep_previous) if keep_previous is not None else None
        name = self._name(target)
        prev_name = self._name(previous) if previous is not None else None

        def before_replace(tmp: Path) -> None:
            digest = sha256_file(tmp)
            table = self.load()
            old = table.get(name, [])
            if previous is not None and target.exists() and self.is_valid(target):
                table[prev_name] = sorted({*table.get(prev_name, []), *old})
                self._save(table)
                os.replace(target, previous)
            table[name] = [*old, digest]
            self._save(table)
            done[name] = [digest]
            if previous is not None and prev_name in table:
                done[prev_name] = old  # what the moved file may hold ([]: nothing recorded)

        done: dict[str, list[str]] = {}
        atomic_write(target, write, before_replace=before_replace)
        table = self.load()
        for key, digests in done.items():
            if digests:
                table[key] = digests
            else:
                table.pop(key, None)
        self._save(table)
        return target
