"""Checking a plain config node against a dataclass: known keys, annotated types, then the
dataclass's own ``__post_init__`` checks. Every problem is one ``ConfigError`` line that
names the config key (``fl.rounds: must be >= 1, got 0``)."""

from __future__ import annotations

import dataclasses
import enum
import importlib
import types
import typing
from typing import Any, Union

from vista.checks import FieldError, is_int, is_number


class ConfigError(ValueError):
    """A config problem, phrased as one line that names the key."""


def locate(target: str, key: str) -> type:
    """The class a ``_target_`` names."""
    module, _, name = str(target).rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as err:
        raise ConfigError(f"{key}._target_: cannot import {target!r} ({type(err).__name__}: {err})") from None
    if not dataclasses.is_dataclass(cls):
        raise ConfigError(f"{key}._target_: {target} is not a dataclass, so it cannot be checked")
    return cls


def check(cls: type, node: Any, key: str) -> Any:
    """``node`` (plain containers) as an instance of dataclass ``cls``."""
    values = _fields(cls, node, key)
    return _build(cls, values, key)


def as_plain(value: Any) -> Any:
    """A checked instance back as plain containers, every field filled (enums as their values)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: as_plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [as_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: as_plain(v) for k, v in value.items()}
    return value


def _where(key: str, field: str) -> str:
    return f"{key}.{field}" if key else field


def _fields(cls: type, node: Any, key: str) -> dict[str, Any]:
    if not isinstance(node, dict):
        raise ConfigError(f"{key or 'config'}: expected a mapping of {cls.__name__}'s fields, got {node!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for k in node:
        if k != "_target_" and k not in fields:
            raise ConfigError(f"{_where(key, k)}: not a key of {cls.__name__}; known: {sorted(fields)}")
    for name, f in fields.items():
        if name not in node and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{_where(key, name)}: missing mandatory value; set it, e.g. {_where(key, name)}=...")
    return {k: _typed(hints[k], v, _where(key, k)) for k, v in node.items() if k != "_target_"}


def _build(cls: type, values: dict[str, Any], key: str) -> Any:
    try:
        return cls(**values)
    except FieldError as err:
        raise ConfigError(f"{_where(key, err.field)}: {err.problem}") from None
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{key or 'config'}: {str(err).strip().splitlines()[0]}") from None


def _typed(tp: Any, v: Any, key: str) -> Any:
    """``v`` as a value of annotation ``tp`` (ints widen to float, numbers to str, lists to
    tuples where asked), or a ConfigError."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return v
    if origin in (Union, types.UnionType):
        if v is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return _typed(option, v, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: expected {_name(tp)}, got {v!r}")
    if origin in (list, tuple):
        if not isinstance(v, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {v!r}")
        elem = args[0] if args else Any
        items = [_typed(elem, x, f"{key}[{i}]") for i, x in enumerate(v)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(v, dict):
            raise ConfigError(f"{key}: expected a mapping, got {v!r}")
        return v
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        known = [m.value for m in tp]
        if getattr(v, "value", v) not in known:
            raise ConfigError(f"{key}: must be one of {known}, got {v!r}")
        return tp(getattr(v, "value", v))
    if dataclasses.is_dataclass(tp):
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return v
        return check(tp, v, key)
    if tp is bool:
        if not isinstance(v, bool):
            raise ConfigError(f"{key}: expected true or false, got {v!r}")
        return v
    if tp is int:
        if not is_int(v):
            raise ConfigError(f"{key}: expected an integer, got {v!r}")
        return int(v)
    if tp is float:
        if not is_number(v):
            raise ConfigError(f"{key}: expected a number, got {v!r}")
        return float(v)
    if tp is str:
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise ConfigError(f"{key}: expected a string, got {v!r}")
        return str(v)
    if isinstance(tp, type) and not isinstance(v, tp):
        raise ConfigError(f"{key}: expected {_name(tp)}, got {v!r}")
    return v


def _name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")
