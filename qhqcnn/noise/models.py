"""Aer noise models: from IBM devices (fake or real) or from a small parametric spec.

Names accepted everywhere a noise model is asked for (``--noise``, ``AerBackend(noise=...)``):

* ``fake_torino``, ``FakeBrisbane``, … — ``NoiseModel.from_backend`` of a fake backend of
  ``qiskit_ibm_runtime.fake_provider`` (its stored calibration);
* ``ibm_torino``, … — the same from a real device's *current* calibration (needs a configured
  ``QiskitRuntimeService``, see :mod:`qhqcnn.backends.devices`);
* a parametric spec for noise studies, components joined by ``+``::

      depolarizing:p1=0.001,p2=0.01     depolarizing error after 1q (sx, x, id) / 2q (cz, cx, ecr)
      thermal:t1=100e-6,t2=80e-6,time1=50e-9,time2=300e-9[,excited=0]
                                        T1/T2 relaxation during 1q/2q gates (seconds)
      readout:p=0.02 | readout:p01=0.01,p10=0.03
                                        readout flips: p01 = P(read 1 | 0), p10 = P(read 0 | 1)
      ideal                             no noise at all

  e.g. ``depolarizing:p1=1e-3,p2=1e-2+thermal:t1=120e-6,t2=90e-6+readout:p=0.02``. Omitted keys
  take the defaults above. ``rz`` is a virtual (error-free) frame change, as on IBM hardware.
  Components compose in order: depolarizing then thermal relaxation, as ``from_backend`` does.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from qiskit_aer.noise import (
    NoiseModel,
    ReadoutError,
    depolarizing_error,
    thermal_relaxation_error,
)

from qhqcnn import _compat
from qhqcnn.backends.devices import get_backend, is_fake_name, normalize_fake_name
from qhqcnn.errors import BackendError, ConfigError

#: Gates the parametric models put errors on (``rz`` is virtual: no error, no duration).
ONE_QUBIT_GATES: tuple[str, ...] = ("sx", "x", "id")
TWO_QUBIT_GATES: tuple[str, ...] = ("cz", "cx", "ecr")
#: Basis of the generic target circuits are transpiled to under parametric noise.
PARAMETRIC_BASIS: tuple[str, ...] = ("rz", "sx", "x", "cx")
IDEAL_NAMES = ("ideal", "none", "noiseless")

#: kind -> {key: default}; the documented spec keys and their defaults.
PARAMETRIC_KINDS: dict[str, dict[str, float]] = {
    "depolarizing": {"p1": 1e-3, "p2": 1e-2},
    "thermal": {"t1": 100e-6, "t2": 80e-6, "time1": 50e-9, "time2": 300e-9, "excited": 0.0},
    "readout": {"p": 0.02, "p01": math.nan, "p10": math.nan},
}


@dataclass(frozen=True)
class NoiseComponent:
    """One parsed ``kind:key=value,...`` component of a parametric spec (defaults filled in)."""

    kind: str
    params: dict[str, float] = field(default_factory=dict)

    def spec(self) -> str:
        given = ",".join(f"{k}={v:g}" for k, v in self.params.items() if not math.isnan(v))
        return f"{self.kind}:{given}" if given else self.kind


@dataclass(frozen=True)
class NoiseSource:
    """A resolved noise name: its Aer model and, for devices, the backend to transpile for."""

    name: str
    kind: str  # "device" | "parametric" | "ideal"
    model: NoiseModel | None
    backend: Any = None
    components: tuple[NoiseComponent, ...] = ()


def is_parametric_spec(name: str) -> bool:
    """Whether ``name`` is a parametric spec (a known kind, or anything with ``:``/``=``)."""
    text = name.strip().lower()
    head = text.split("+")[0].split(":")[0]
    return head in PARAMETRIC_KINDS or head in IDEAL_NAMES or ":" in text or "=" in text


def parse_noise_spec(spec: str) -> tuple[NoiseComponent, ...]:
    """Parse ``kind:key=value,...(+kind:...)*`` into components, with clear errors."""
    components = []
    for part in spec.strip().split("+"):
        kind, _, body = part.strip().partition(":")
        kind = kind.strip().lower()
        if kind in IDEAL_NAMES and not body.strip():
            continue
        if kind not in PARAMETRIC_KINDS:
            raise ConfigError(
                f"unknown noise kind {kind!r} in {spec!r}; parametric kinds: "
                f"{', '.join(PARAMETRIC_KINDS)} (or a device name such as fake_torino)"
            )
        defaults = PARAMETRIC_KINDS[kind]
        params = dict(defaults)
        for item in filter(None, (s.strip() for s in body.split(","))):
            key, sep, value = item.partition("=")
            key = key.strip().lower()
            if not sep or key not in defaults:
                raise ConfigError(
                    f"bad item {item!r} in noise component {part.strip()!r}; "
                    f"expected KEY=VALUE with KEY in {', '.join(defaults)}"
                )
            try:
                params[key] = float(value)
            except ValueError:
                raise ConfigError(f"{kind}: {key}={value!r} is not a number") from None
        _check_component(kind, params)
        components.append(NoiseComponent(kind, params))
    return tuple(components)


def _check_component(kind: str, p: dict[str, float]) -> None:
    def require(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(f"{kind}: {message}")

    if kind == "depolarizing":
        require(0 <= p["p1"] <= 4 / 3, f"p1 must be in [0, 4/3], got {p['p1']}")
        require(0 <= p["p2"] <= 16 / 15, f"p2 must be in [0, 16/15], got {p['p2']}")
    elif kind == "thermal":
        require(p["t1"] > 0 and p["t2"] > 0, "t1 and t2 must be > 0")
        require(p["t2"] <= 2 * p["t1"], f"t2 ({p['t2']:g}) must be <= 2*t1 ({2 * p['t1']:g})")
        require(p["time1"] >= 0 and p["time2"] >= 0, "gate times must be >= 0")
        require(0 <= p["excited"] <= 1, "excited must be in [0, 1]")
    elif kind == "readout":
        for key in ("p", "p01", "p10"):
            require(math.isnan(p[key]) or 0 <= p[key] <= 1, f"{key} must be in [0, 1]")


def _readout_probabilities(params: Mapping[str, float]) -> tuple[float, float]:
    p01 = params["p"] if math.isnan(params["p01"]) else params["p01"]
    p10 = params["p"] if math.isnan(params["p10"]) else params["p10"]
    return p01, p10


def parametric_noise_model(components: Iterable[NoiseComponent]) -> NoiseModel:
    """An Aer ``NoiseModel`` with the same errors on every qubit, from parsed components."""
    model = NoiseModel(basis_gates=["id", *PARAMETRIC_BASIS, *TWO_QUBIT_GATES])
    for comp in components:
        p = comp.params
        if comp.kind == "depolarizing":
            one, two = depolarizing_error(p["p1"], 1), depolarizing_error(p["p2"], 2)
        elif comp.kind == "thermal":
            one = thermal_relaxation_error(p["t1"], p["t2"], p["time1"], p["excited"])
            relax = thermal_relaxation_error(p["t1"], p["t2"], p["time2"], p["excited"])
            two = relax.expand(relax)
        else:
            p01, p10 = _readout_probabilities(p)
            model.add_all_qubit_readout_error(ReadoutError([[1 - p01, p01], [p10, 1 - p10]]))
            continue
        model.add_all_qubit_quantum_error(one, list(ONE_QUBIT_GATES), warnings=False)
        model.add_all_qubit_quantum_error(two, list(TWO_QUBIT_GATES), warnings=False)
    return model


@lru_cache(maxsize=8)
def device_noise_model(name: str) -> tuple[NoiseModel, Any]:
    """``(NoiseModel.from_backend(device), device)``, cached (a 133-qubit model takes ~5 s).

    Do not mutate the returned model: trim or remap it (both return new models).
    """
    backend = get_backend(name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # calibration notes; deprecations show
            return NoiseModel.from_backend(backend), backend
    except Exception as exc:  # noqa: BLE001 - Aer raises NoiseError and others
        raise BackendError(f"cannot build a noise model for {name!r}: {exc}") from exc


def load_noise(name: str | None) -> NoiseSource:
    """Resolve a noise name (device, parametric spec, ``ideal`` or ``None``) to its model."""
    if name is None or name.strip().lower() in IDEAL_NAMES:
        return NoiseSource("ideal", "ideal", None)
    text = name.strip()
    if is_parametric_spec(text):
        components = parse_noise_spec(text)
        spec = "+".join(c.spec() for c in components) or "ideal"
        return NoiseSource(spec, "parametric", parametric_noise_model(components), None, components)
    key = normalize_fake_name(text) if is_fake_name(text) else text
    model, backend = device_noise_model(key)
    return NoiseSource(key, "device", model, backend)


# -- trimming and re-indexing ------------------------------------------------------------------
def remap_noise_model(
    model: NoiseModel, mapping: Mapping[int, int], *, keep_passes: bool = False
) -> NoiseModel:
    """A new model with only the errors whose qubits are all in ``mapping``, re-indexed by it.

    All-qubit errors are kept as they are. Custom noise passes (``from_backend`` adds one that
    puts relaxation on ``delay`` instructions, indexed by physical qubit) are kept only with
    ``keep_passes=True``, which makes sense only for the identity mapping. Aer has no public
    accessor for a model's error tables, so they are read from its (stable) private attributes
    and re-added through the public ``add_*`` methods.
    """
    new = NoiseModel(basis_gates=model.basis_gates)
    for label, error in _compat.default_quantum_errors(model).items():
        new.add_all_qubit_quantum_error(error, label, warnings=False)
    for label, table in _compat.local_quantum_errors(model).items():
        for qubits, error in table.items():
            if all(q in mapping for q in qubits):
                new.add_quantum_error(error, label, [mapping[q] for q in qubits], warnings=False)
    if _compat.default_readout_error(model) is not None:
        new.add_all_qubit_readout_error(_compat.default_readout_error(model), warnings=False)
    for qubits, error in _compat.local_readout_errors(model).items():
        if all(q in mapping for q in qubits):
            new.add_readout_error(error, [mapping[q] for q in qubits], warnings=False)
    if keep_passes:
        _compat.set_custom_noise_passes(new, _compat.custom_noise_passes(model))
    return new


def trim_noise_model(model: NoiseModel, physical_qubits: Iterable[int]) -> NoiseModel:
    """The errors of ``model`` on ``physical_qubits`` only (same indices; results unchanged for
    circuits that touch no other qubit, while Aer serialises a far smaller model per run)."""
    return remap_noise_model(model, {q: q for q in physical_qubits}, keep_passes=True)


# -- description ---------------------------------------------------------------------------------
def error_rate(error) -> float:
    """Average gate infidelity of a ``QuantumError`` (1 − F_avg of its channel vs identity)."""
    from qiskit.quantum_info import average_gate_fidelity

    return float(1.0 - average_gate_fidelity(error.to_quantumchannel()))


def readout_flips(model: NoiseModel, qubit: int) -> tuple[float, float] | None:
    """``(P(read 1 | 0), P(read 0 | 1))`` of ``qubit``'s single-qubit readout error, if any."""
    error = _compat.local_readout_errors(model).get((qubit,), _compat.default_readout_error(model))
    if error is None or error.number_of_qubits != 1:
        return None
    probs = error.probabilities
    return float(probs[0][1]), float(probs[1][0])


def describe_noise_model(
    model: NoiseModel | None,
    qubits: Sequence[int] | None = None,
    *,
    backend: Any = None,
    name: str = "",
) -> dict[str, Any]:
    """A JSON-ready summary: basis gates, gate errors, T1/T2 and readout flips of ``qubits``."""
    if model is None:
        return {"name": name or "ideal", "ideal": True, "qubits": list(qubits or [])}
    qubits = sorted(qubits) if qubits is not None else sorted(model.noise_qubits)
    chosen = set(qubits)
    defaults = _compat.default_quantum_errors(model)
    all_qubit = {label: error_rate(err) for label, err in defaults.items()}
    gates: dict[str, dict[str, float]] = {}
    for label, table in sorted(_compat.local_quantum_errors(model).items()):
        for qs, err in sorted(table.items()):
            if set(qs) <= chosen:
                gates.setdefault(label, {})[",".join(map(str, qs))] = error_rate(err)
    per_qubit: dict[str, dict[str, Any]] = {}
    for q in qubits:
        entry: dict[str, Any] = {}
        flips = readout_flips(model, q)
        if flips is not None:
            entry["readout_p01"], entry["readout_p10"] = flips
        props = _qubit_properties(backend, q)
        if props is not None:
            entry.update({k: v for k, v in props.items() if v is not None})
        per_qubit[str(q)] = entry
    return {
        "name": name,
        "ideal": model.is_ideal(),
        "basis_gates": model.basis_gates,
        "noise_instructions": model.noise_instructions,
        "qubits": qubits,
        "all_qubit_gate_errors": all_qubit,
        "gate_errors": gates,
        "per_qubit": per_qubit,
    }


def _qubit_properties(backend: Any, qubit: int) -> dict[str, float | None] | None:
    if backend is None:
        return None
    try:
        props = backend.qubit_properties(qubit)
    except Exception:  # noqa: BLE001 - backends without properties
        return None
    return {"t1": getattr(props, "t1", None), "t2": getattr(props, "t2", None)}
