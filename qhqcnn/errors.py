"""Exception types: each user-facing failure raises one of these, saying what to do."""

from __future__ import annotations


class QhqcnnError(Exception):
    """Base class of all errors the package raises on purpose."""


class DataError(QhqcnnError):
    """A dataset file is missing, corrupt, mis-shaped or fails its checksum."""


class ConfigError(QhqcnnError):
    """A configuration or command-line value is invalid or impossible."""


class BackendError(QhqcnnError):
    """An execution backend is unknown, unavailable or failed."""


class TrainingError(QhqcnnError):
    """Training cannot continue (e.g. a non-finite loss)."""


class RunNotFoundError(QhqcnnError):
    """A run directory or its files do not exist."""
