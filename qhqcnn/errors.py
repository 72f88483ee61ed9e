"""Exception types: each user-facing failure raises one of these, saying what to do.

Every kind has its own process exit code (``exit_code``), which the command line returns after
printing the one-line message: scripts can tell a bad flag from missing data, an unavailable
backend, a hardware failure or a corrupt file without parsing text.
"""

from __future__ import annotations


class QhqcnnError(Exception):
    """Base class of all errors the package raises on purpose."""

    #: the command line's exit status for this kind of error
    exit_code: int = 2


class ConfigError(QhqcnnError):
    """A configuration or command-line value is invalid or impossible."""

    exit_code = 3


class DataError(QhqcnnError):
    """A dataset file is missing, corrupt, mis-shaped or fails its checksum."""

    exit_code = 4


class BackendError(QhqcnnError):
    """An execution backend is unknown, unavailable or failed."""

    exit_code = 5


class HardwareError(QhqcnnError):
    """An IBM Quantum device, account, job or job record could not be used."""

    exit_code = 6


class IntegrityError(QhqcnnError):
    """A file the package wrote (checkpoint, result, record) fails its recorded checksum, or
    another process holds the lock on it."""

    exit_code = 7


class TrainingError(QhqcnnError):
    """Training cannot continue (e.g. a non-finite loss)."""

    exit_code = 8


class RunNotFoundError(QhqcnnError):
    """A run directory or its files do not exist."""

    exit_code = 9
