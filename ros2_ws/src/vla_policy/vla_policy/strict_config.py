"""Strict construction of frozen config dataclasses from plain dicts (JSON/YAML).

Every config in the stack is a frozen dataclass. Building one from a dict rejects unknown keys with the
nearest valid name, recurses into nested dataclass fields, and lets ``__post_init__`` validate values.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A config key or value is invalid. The message names the key and what was expected."""


def nearest_name(name: str, candidates: typing.Iterable[str]) -> str | None:
    """The closest candidate to ``name``, or None when nothing is close."""
    matches = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.5)
    return matches[0] if matches else None


def unknown_key_message(key: str, valid: typing.Iterable[str], where: str) -> str:
    valid = sorted(valid)
    hint = nearest_name(key, valid)
    suggestion = f"; did you mean '{hint}'?" if hint else f"; valid keys: {', '.join(valid)}"
    return f"unknown key '{key}' in {where}{suggestion}"


def _dataclass_type(annotation: Any) -> type | None:
    """The dataclass inside ``annotation`` (``X`` or ``X | None``), if any."""
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if dataclasses.is_dataclass(arg) and isinstance(arg, type):
                return arg
    return None


def from_dict(cls: type[T], data: Mapping[str, Any], where: str | None = None) -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys raise ConfigError with a suggestion.

    Nested dataclass fields accept dicts. Lists become tuples, so frozen configs stay hashable.
    """
    where = where or cls.__name__
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(unknown_key_message(key, fields, where))
        nested = _dataclass_type(hints[key])
        if nested is not None and isinstance(value, Mapping):
            value = from_dict(nested, value, f"{where}.{key}")
        elif isinstance(value, list):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (nested) config dataclass; tuples become lists."""

    def convert(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: convert(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, tuple | list):
            return [convert(v) for v in value]
        return value

    return convert(config)


def replace(config: T, **changes: Any) -> T:
    """``dataclasses.replace`` with the same unknown-key error as ``from_dict``."""
    names = {f.name for f in dataclasses.fields(config)}  # type: ignore[arg-type]
    for key in changes:
        if key not in names:
            raise ConfigError(unknown_key_message(key, names, type(config).__name__))
    try:
        return dataclasses.replace(config, **changes)  # type: ignore[type-var]
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{type(config).__name__}: {exc}") from exc


def require(condition: bool, message: str) -> None:
    """Raise ConfigError(message) unless ``condition``; for ``__post_init__`` validation."""
    if not condition:
        raise ConfigError(message)
