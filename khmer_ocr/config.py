"""The one config system: typed dataclasses loaded from YAML, with `key.sub=value` overrides."""

from __future__ import annotations

import contextlib
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from khmer_ocr.errors import KhmerOcrError

T = TypeVar("T")
CONFIG_DIR = Path(__file__).parent / "configs"


class ConfigError(KhmerOcrError, ValueError):
    """A config file or override that does not fit its dataclass."""


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} does not fit {tp}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)[:1] or (Any,)
        items = [_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        kt, vt = typing.get_args(tp) or (Any, Any)
        return {_coerce(kt, k, where): _coerce(vt, v, f"{where}.{k}") for k, v in value.items()}
    if tp is float and not isinstance(value, bool) and isinstance(value, int | float | str):
        with contextlib.suppress(ValueError):
            return float(value)  # a string too: YAML 1.1 reads 3e-4 (no dot) as one
    if tp is int and isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    wrong_type = tp in (int, float, str, bool) and not isinstance(value, tp)
    if wrong_type or (tp is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def from_dict(cls: type[T], data: dict, where: str = "config") -> T:
    """Build dataclass cls from a mapping, checking names and types; unknown keys are errors."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(names)}")
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def to_dict(obj: Any) -> dict:
    """A plain dict (YAML/JSON-ready) of a config dataclass."""
    return dataclasses.asdict(obj)


def _set_path(data: dict, dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for p in parents:
        data = data.setdefault(p, {})
    data[last] = value


def load_config(
    cls: type[T],
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    layers: list[str | Path] | None = None,
) -> T:
    """Load cls from a YAML file (missing keys keep their defaults), merge YAML layers on top (a profile,
    say), then apply `a.b=value` overrides.

    A file may start with `extends: other.yaml` (relative to itself) to build on another file.
    """
    data: dict = {}
    if path is not None:
        data = _read_yaml(Path(path))
    for layer in layers or []:
        data = _merge(data, _read_yaml(Path(layer)))
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        _set_path(data, key.strip(), yaml.safe_load(raw))
    return from_dict(cls, data, where=str(path or cls.__name__))


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    parent = data.pop("extends", None)
    if parent:
        data = _merge(_read_yaml(path.parent / parent), data)
    return data


def save_config(obj: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(obj), allow_unicode=True, sort_keys=False), encoding="utf-8")


def profile_path(kind: str, name: str) -> Path:
    """The packaged YAML for a named profile, e.g. profile_path("data", "demo") or
    profile_path("train", "phase3_1/baseline_optimized")."""
    path = CONFIG_DIR / kind / f"{name}.yaml"
    if not path.is_file():
        root = CONFIG_DIR / kind
        what = _KINDS.get(kind, f"{kind} profile")
        if kind == "train":  # every runnable config, phase3_1/* included; not base.yaml or the profiles
            found = [p for p in root.rglob("*.yaml") if p.parent.name != "profiles" and p.stem != "base"]
        else:
            found = list(root.glob("*.yaml"))
        choices = sorted(str(p.relative_to(root))[:-5] for p in found)
        raise ConfigError(f"unknown {what} {name!r}; choose one of {', '.join(choices)} (or a YAML file)")
    return path


_KINDS = {"train": "training config", "train/profiles": "training profile", "data": "data profile",
          "gates": "gate set"}  # fmt: skip
