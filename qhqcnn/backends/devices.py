"""IBM Quantum devices by name: fake backends (local testing mode) and real ones via Runtime.

``fake_torino``, ``FakeTorino`` and ``torino`` with ``fake=True`` all name the same fake device.
Real devices (``ibm_torino``) need a ``QiskitRuntimeService``: from a saved account, or from the
``QISKIT_IBM_TOKEN`` / ``QISKIT_IBM_INSTANCE`` environment variables. Tokens are read from there
only and never stored by this package.
"""

from __future__ import annotations

import os
import warnings
from functools import lru_cache
from typing import Any

from qhqcnn.errors import BackendError

TOKEN_ENV = "QISKIT_IBM_TOKEN"
INSTANCE_ENV = "QISKIT_IBM_INSTANCE"
CHANNEL_ENV = "QISKIT_IBM_CHANNEL"


def normalize_fake_name(name: str) -> str:
    """``FakeTorino`` / ``fake-torino`` / ``fake_torino`` → ``fake_torino``."""
    text = name.strip()
    if text.lower().startswith("fake") and not text.lower().startswith("fake_"):
        text = "fake_" + text[4:]
    text = text.replace("-", "_").lower()
    if text.endswith("v2") and text[:-2] in fake_backend_names():
        text = text[:-2]
    return text


def is_fake_name(name: str) -> bool:
    return name.strip().lower().startswith("fake")


@lru_cache(maxsize=1)
def _fake_provider():
    from qiskit_ibm_runtime.fake_provider import FakeProviderForBackendV2

    return FakeProviderForBackendV2()


@lru_cache(maxsize=1)
def fake_backend_names() -> tuple[str, ...]:
    """Every fake backend of ``qiskit_ibm_runtime.fake_provider`` (e.g. ``fake_torino``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # calibration notes; deprecations show
        return tuple(sorted(b.name for b in _fake_provider().backends()))


@lru_cache(maxsize=16)
def get_fake_backend(name: str):
    """The fake backend called ``name`` (cached: building a 127-qubit one takes seconds)."""
    key = normalize_fake_name(name)
    if key not in fake_backend_names():
        raise BackendError(
            f"unknown fake backend {name!r}; available: {', '.join(fake_backend_names())}"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # calibration notes; deprecations show
        return _fake_provider().backend(key)


def runtime_service(**kwargs: Any):
    """A ``QiskitRuntimeService`` from the environment or a saved account, or a clear error.

    Raises before any other work when no credentials exist or the service rejects them.
    """
    from qiskit_ibm_runtime import QiskitRuntimeService

    token = os.environ.get(TOKEN_ENV)
    options: dict[str, Any] = dict(kwargs)
    if token:
        options.setdefault("token", token)
        options.setdefault("channel", os.environ.get(CHANNEL_ENV, "ibm_quantum_platform"))
        if os.environ.get(INSTANCE_ENV):
            options.setdefault("instance", os.environ[INSTANCE_ENV])
    try:
        return QiskitRuntimeService(**options)
    except Exception as exc:  # noqa: BLE001 - the service raises many types; all mean "no access"
        detail = str(exc)
        for secret in known_secrets():  # the token and instance never reach a message
            detail = detail.replace(secret, "***")
        raise BackendError(
            "no usable IBM Quantum credentials: set QISKIT_IBM_TOKEN (and QISKIT_IBM_INSTANCE) "
            "or save an account with QiskitRuntimeService.save_account(...); the service said: "
            f"{detail}"
        ) from None


def known_secrets(service=None) -> list[str]:
    """Token and instance values that must never be written anywhere (for scrubbing output).

    From the environment and, when ``service`` is given, its active account.
    """
    values = [os.environ.get(TOKEN_ENV), os.environ.get(INSTANCE_ENV)]
    if service is not None:
        try:
            account = service.active_account() or {}
        except Exception:  # noqa: BLE001 - local services and mocks have no account
            account = {}
        values += [account.get("token"), account.get("instance")]
    return sorted({v for v in values if isinstance(v, str) and len(v) >= 6}, key=len, reverse=True)


def get_backend(name: str, *, service=None):
    """A backend by name: a fake one for ``fake_*`` names, else a real one from the service."""
    if is_fake_name(name):
        return get_fake_backend(name)
    service = service or runtime_service()
    try:
        return service.backend(name)
    except Exception as exc:  # noqa: BLE001
        raise BackendError(f"IBM Quantum backend {name!r} is not available: {exc}") from None
