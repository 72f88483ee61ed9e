"""Which Runtime estimator runs a job, how it is built, and which mitigation really applies.

qiskit-ibm-runtime ≥ 0.50 ships the client-side *executor* estimator
(``qiskit_ibm_runtime.executor_estimator.Estimator``: twirling, TREX, ZNE and DD are done on this
machine); older releases only have the server-side ``EstimatorV2`` (deprecated since 0.50). Both
are feature-detected. In local testing mode (fake backends) the legacy primitive ignores every
mitigation option, and the executor one measures every qubit of the device, which does not fit
in memory for large fake devices: ``auto`` then falls back to the legacy primitive and says so.
"""

from __future__ import annotations

from typing import Any

from qhqcnn.errors import BackendError, ConfigError

EXECUTOR = "executor"
LEGACY = "legacy"
#: Largest fake device the executor estimator can simulate locally (it measures every qubit).
LOCAL_EXECUTOR_MAX_QUBITS = 32


def executor_estimator_class() -> type | None:
    """The client-side executor ``Estimator`` class, or ``None`` on older qiskit-ibm-runtime."""
    try:
        from qiskit_ibm_runtime.executor_estimator import Estimator
    except ImportError:
        return None
    return Estimator


def legacy_estimator_class() -> type | None:
    """The server-side Runtime ``EstimatorV2`` class, or ``None`` once it has been removed."""
    try:
        from qiskit_ibm_runtime import EstimatorV2
    except ImportError:
        return None
    return EstimatorV2


def is_local_backend(backend: Any) -> bool:
    """True for fake (and any non-IBM) backends: qiskit-ibm-runtime's local testing mode."""
    from qiskit_ibm_runtime import IBMBackend

    return not isinstance(backend, IBMBackend)


def choose_primitive(requested: str, backend: Any) -> tuple[str, str]:
    """``(kind, reason)``: the estimator kind to use for ``backend`` given ``--primitive``."""
    has_executor = executor_estimator_class() is not None
    has_legacy = legacy_estimator_class() is not None
    local = is_local_backend(backend)
    if requested == EXECUTOR:
        if not has_executor:
            raise ConfigError(
                "this qiskit-ibm-runtime has no executor estimator (needs >= 0.50); "
                "use --primitive legacy"
            )
        return EXECUTOR, "requested"
    if requested == LEGACY:
        if not has_legacy:
            raise ConfigError("this qiskit-ibm-runtime no longer has the legacy EstimatorV2")
        return LEGACY, "requested"
    if not has_executor:
        return LEGACY, "the installed qiskit-ibm-runtime has no executor estimator"
    if local and backend.num_qubits > LOCAL_EXECUTOR_MAX_QUBITS:
        return EXECUTOR, (
            f"local testing mode on a {backend.num_qubits}-qubit fake device: the executor "
            "estimator simulates every qubit it is given, so it runs on the device trimmed to "
            "the qubits the circuit uses (qhqcnn.backends.trim)"
        )
    return EXECUTOR, "the default: client-side mitigation, qiskit-ibm-runtime >= 0.50"


def make_estimator(kind: str, mode: Any, options: dict[str, Any]):
    """An estimator of ``kind`` on ``mode`` (a ``Batch`` or backend) with ``options``."""
    cls = executor_estimator_class() if kind == EXECUTOR else legacy_estimator_class()
    if cls is None:
        raise BackendError(f"the {kind} estimator is not available in this qiskit-ibm-runtime")
    return cls(mode=mode, options=options)  # the legacy estimator's deprecation shows


def _techniques(options: dict[str, Any]) -> dict[str, bool]:
    resilience = options.get("resilience", {}) or {}
    twirling = options.get("twirling", {}) or {}
    dd = options.get("dynamical_decoupling", {}) or {}
    return {
        "trex": bool(resilience.get("measure_mitigation")),
        "zne": bool(resilience.get("zne_mitigation")),
        "pec": bool(resilience.get("pec_mitigation")),
        "gate_twirling": bool(twirling.get("enable_gates")),
        "measure_twirling": bool(twirling.get("enable_measure")),
        "dd": bool(dd.get("enable")),
    }


def applied_mitigation(
    kind: str, local: bool, options: dict[str, Any], finalized: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What really runs: techniques on/off, where they run, and why.

    ``finalized`` is the executor's finalized options (``Estimator.finalize_options()`` before
    submission, ``result.metadata["options"]`` after): the ground truth for that primitive.
    """
    if kind == EXECUTOR:
        techniques = _techniques(finalized or {})
        return {
            "techniques": techniques,
            "where": "client side (this machine), executor estimator",
            "note": "finalized executor options (resilience-level defaults resolved)",
        }
    if local:
        return {
            "techniques": dict.fromkeys(_techniques({}), False),
            "where": "nowhere",
            "note": (
                "local testing mode: the legacy EstimatorV2 ignores resilience, twirling and "
                "dynamical-decoupling options; plain shots on the fake device's noise model"
            ),
        }
    level = options.get("resilience_level", 1)
    requested = _techniques(options)
    if level >= 1:
        requested["trex"] = requested["measure_twirling"] = True
    if level >= 2:
        requested["zne"] = requested["gate_twirling"] = True
    return {
        "techniques": requested,
        "where": "server side, legacy EstimatorV2",
        "note": f"requested at resilience level {level}; the service applies them",
    }


def finalized_options(estimator: Any) -> dict[str, Any] | None:
    """The executor estimator's finalized options as a plain dict (``None`` for legacy)."""
    finalize = getattr(estimator, "finalize_options", None)
    if finalize is None:
        return None
    return finalize().model_dump()
