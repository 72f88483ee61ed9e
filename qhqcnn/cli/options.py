"""Command-line flags generated from the config dataclasses, and ``--config FILE``.

Every training and architecture flag of ``qhqcnn train``/``reproduce`` is a field of
:class:`~qhqcnn.config.TrainConfig` or :class:`~qhqcnn.config.ModelSpec`: its name, type,
default, choices and help text come from the field (``metadata`` holds the help and choices), so
each default and each choice lives in ``qhqcnn/config.py`` only.

The flags are added with ``default=argparse.SUPPRESS``: the parsed namespace holds exactly the
flags the user typed, which is how ``--config FILE`` is overridden by them and how ``--resume``
tells which flags differ from the saved run. Torch-free (``qhqcnn --help`` must stay fast).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import MISSING, Field, dataclass, fields
from pathlib import Path
from typing import Any

from qhqcnn.config import ModelSpec, TrainConfig
from qhqcnn.errors import ConfigError

_TYPES: dict[str, type] = {"int": int, "float": float, "str": str, "bool": bool}


@dataclass(frozen=True)
class ConfigOption:
    """One config field and the flag it becomes."""

    #: ``epochs`` or, for a :class:`ModelSpec` field, ``model.num_qubits`` (also the ``dest``)
    key: str
    field: Field

    @property
    def meta(self) -> dict[str, Any]:
        return dict(self.field.metadata)

    @property
    def flag(self) -> str:
        return self.meta.get("flag") or "--" + self.field.name.replace("_", "-")

    @property
    def default(self) -> Any:
        if self.field.default is not MISSING:
            return self.field.default
        if self.field.default_factory is not MISSING:
            return self.field.default_factory()
        return None

    @property
    def optional(self) -> bool:
        return "None" in [part.strip() for part in str(self.field.type).split("|")]

    @property
    def kind(self) -> str:
        """``int``, ``float``, ``str``, ``bool`` or ``options`` (a dict of backend options)."""
        base = [p.strip() for p in str(self.field.type).split("|") if p.strip() != "None"][0]
        return "options" if base.startswith("dict") else base

    def help(self) -> str:
        text = self.meta.get("help") or ""
        default = self.default
        if self.meta.get("show_default", True) and default is not None and self.kind != "options":
            shown = ("on" if default else "off") if isinstance(default, bool) else default
            text += f" (default: {shown})"
        return text.replace("%", "%%")

    def check(self, value: Any, where: str) -> Any:
        """``value`` from a config file, checked against the field's type and choices."""
        if value is None and self.optional:
            return None
        kind = self.kind
        if kind == "options":
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: {self.key} must be a mapping, got {value!r}")
            return dict(value)
        expected = _TYPES.get(kind, str)
        if expected is str and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # ``relabel: 3`` (one class vs the rest)
        if expected is float and isinstance(value, str):
            try:  # YAML 1.1 reads ``1e-3`` (no dot) as a string
                value = float(value)
            except ValueError:
                pass
        ok = isinstance(value, expected) and not (expected is not bool and isinstance(value, bool))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            ok, value = True, float(value)
        if not ok:
            raise ConfigError(f"{where}: {self.key} must be {kind}, got {value!r}")
        choices = self.meta.get("choices")
        if choices is not None and value not in choices:
            allowed = ", ".join(str(c) for c in choices)
            raise ConfigError(f"{where}: {self.key} must be one of {allowed}, got {value!r}")
        return value


def config_options() -> list[ConfigOption]:
    """Every flag-bearing field: TrainConfig's in order, ModelSpec's in place of ``model``."""
    options = []
    for f in fields(TrainConfig):
        if f.name == "model":
            options += [ConfigOption(f"model.{g.name}", g) for g in fields(ModelSpec)]
        else:
            options.append(ConfigOption(f.name, f))
    return options


def option(key: str) -> ConfigOption:
    """The :class:`ConfigOption` of ``key`` (``epochs``, ``model.layers``)."""
    for candidate in config_options():
        if candidate.key == key:
            return candidate
    raise KeyError(key)


def add_config_arguments(parser: argparse.ArgumentParser, exclude: Iterable[str] = ()) -> None:
    """Add a flag for every config field not in ``exclude`` (keys such as ``seed``), in two
    groups (the architecture, the recipe), with ``default=SUPPRESS`` so that the namespace
    holds only the flags given."""
    skip = set(exclude)
    groups = {
        True: parser.add_argument_group(
            "architecture (qhqcnn.config.ModelSpec; --config key model:)"
        ),
        False: parser.add_argument_group("run and recipe (qhqcnn.config.TrainConfig)"),
    }
    for opt in config_options():
        if opt.key in skip:
            continue
        meta = opt.meta
        kwargs: dict[str, Any] = {"dest": opt.key, "default": argparse.SUPPRESS}
        if opt.kind == "bool":
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["metavar"] = meta.get("metavar") or opt.flag[2:].upper().replace("-", "_")
            if opt.kind == "options":
                kwargs["action"] = "append"
            else:
                kwargs["type"] = _TYPES.get(opt.kind, str)
                if meta.get("choices") is not None:
                    kwargs["choices"] = list(meta["choices"])
                    kwargs["metavar"] = "{" + ",".join(str(c) for c in meta["choices"]) + "}"
        groups[opt.key.startswith("model.")].add_argument(opt.flag, help=opt.help(), **kwargs)


def parse_backend_options(pairs: Sequence[str] | None, flag: str = "--backend-option") -> dict:
    """``KEY=VALUE`` strings as a dict (values parsed as JSON when they are JSON)."""
    options: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"{flag} expects KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def given_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The config values of the flags given on the command line, by key."""
    values = {}
    for opt in config_options():
        if hasattr(args, opt.key):
            value = getattr(args, opt.key)
            values[opt.key] = parse_backend_options(value) if opt.kind == "options" else value
    return values


def flatten(data: dict[str, Any], where: str) -> dict[str, Any]:
    """A TrainConfig mapping (nested ``model:``) as checked values by key; an unknown key is a
    :class:`ConfigError` naming it."""
    known = {opt.key: opt for opt in config_options()}
    values: dict[str, Any] = {}
    unknown = []
    for key, value in data.items():
        if key == "model" and isinstance(value, str):
            value = {"model": value}  # ``model: hqcnn`` is short for ``model: {model: hqcnn}``
        if key == "model" and isinstance(value, dict):
            for sub, sub_value in value.items():
                if f"model.{sub}" in known:
                    values[f"model.{sub}"] = known[f"model.{sub}"].check(sub_value, where)
                else:
                    unknown.append(f"model.{sub}")
        elif key == "model":
            raise ConfigError(f"{where}: model must be a mapping of ModelSpec fields or a name")
        elif key in known:
            values[key] = known[key].check(value, where)
        else:
            unknown.append(str(key))
    if unknown:
        raise ConfigError(
            f"{where}: unknown config key{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(unknown)} (known: the fields of TrainConfig, and of ModelSpec under "
            "model:; see `qhqcnn train --help`)"
        )
    return values


def load_config_file(path: str | Path) -> dict[str, Any]:
    """The checked values of a JSON or YAML file of TrainConfig keys (``model:`` nested), by
    key. A run's ``config.json`` record is accepted too (its ``config`` entry is used)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read --config {path}: {exc.strerror or exc}") from None
    yaml_suffix = path.suffix.lower() in (".yaml", ".yml")
    try:
        data = _load_yaml(text, path) if yaml_suffix else json.loads(text)
    except json.JSONDecodeError as exc:
        if path.suffix.lower() == ".json":
            raise ConfigError(f"--config {path} is not valid JSON: {exc}") from None
        data = _load_yaml(text, path)  # no .json suffix: YAML (a superset of JSON) decides
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path} must hold a mapping of config keys")
    if isinstance(data.get("config"), dict) and "dataset" not in data:
        data = data["config"]  # a run record (runs/NAME/config.json)
    return flatten(data, f"--config {path}")


def _load_yaml(text: str, path: Path) -> Any:
    try:
        import yaml
    except ImportError:
        raise ConfigError(
            f"--config {path}: reading YAML needs PyYAML (pip install pyyaml); or use JSON"
        ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config {path} is not valid YAML: {exc}") from None


def build_config(values: dict[str, Any]) -> TrainConfig:
    """The TrainConfig of ``values`` (keys as :func:`config_options`; the rest: defaults)."""
    top = {k: v for k, v in values.items() if not k.startswith("model.")}
    spec = {k.split(".", 1)[1]: v for k, v in values.items() if k.startswith("model.")}
    return TrainConfig(**top, model=ModelSpec(**spec))


def value_of(values: dict[str, Any], key: str) -> Any:
    """``values[key]``, else the field's default."""
    return values[key] if key in values else option(key).default


def differences(saved: TrainConfig, values: dict[str, Any]) -> list[str]:
    """``--flag VALUE (saved: OLD)`` for each value that differs from ``saved``'s."""
    record = saved.to_dict()
    flat = {**{k: v for k, v in record.items() if k != "model"}}
    flat.update({f"model.{k}": v for k, v in record["model"].items()})
    found = []
    for key, value in values.items():
        old = flat.get(key)
        if key == "backend_options":
            value = {**old, **value}
        if value != old:
            flag = option(key).flag
            if isinstance(value, bool):  # --no-attention (saved: --attention)
                found.append(f"{_bool_flag(flag, value)} (saved: {_bool_flag(flag, old)})")
            else:
                found.append(f"{flag} {_show(value)} (saved: {_show(old)})")
    return found


def _bool_flag(flag: str, value: Any) -> str:
    return flag if value else "--no-" + flag[2:]


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items()) or "{}"
    return str(value)


class DeprecatedAlias(argparse.Action):
    """An old option string kept working with a warning on stderr: it stores (or, with
    ``append=True``, appends) into the new option's ``dest``."""

    def __init__(self, option_strings, dest, replacement: str = "", append: bool = False, **kw):
        super().__init__(option_strings, dest, **kw)
        self.replacement = replacement
        self.append = append

    def __call__(self, parser, namespace, values, option_string=None):
        print(
            f"warning: {parser.prog} {option_string} is deprecated: use {self.replacement} "
            "(in train/evaluate, --backend is the simulator backend)",
            file=sys.stderr,
        )
        if self.append:
            values = [*(getattr(namespace, self.dest, None) or []), values]
        setattr(namespace, self.dest, values)


def add_deprecated_backend_flag(container: Any, *, append: bool = False) -> None:
    """The old ``--backend`` spelling of ``--ibm-backend`` on a hardware/circuits command: it
    warns and stores (or, with ``append``, appends) into ``ibm_backend``."""
    container.add_argument(
        "--backend",
        dest="ibm_backend",
        metavar="NAME",
        action=DeprecatedAlias,
        replacement="--ibm-backend",
        append=append,
        help="deprecated alias of --ibm-backend",
    )


def walk(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """``parser`` and every subcommand parser under it."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            seen: set[int] = set()
            for sub in action.choices.values():
                if id(sub) not in seen:
                    seen.add(id(sub))
                    yield from walk(sub)
