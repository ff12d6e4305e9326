"""Configuration is data: dataclasses validated at the edge.

`from_mapping(Cls, data, where)` builds a dataclass from a TOML/JSON mapping, rejecting unknown
keys (suggesting the nearest valid name) and wrong types with one line that names the key, the
value and what is accepted. Stage sections live in `pocketml/configs/<stage>.py`.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

from pocketml.errors import PocketMLError

T = TypeVar("T")


def load_toml(path: str | Path) -> dict:
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise PocketMLError(f"config file {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise PocketMLError(f"{path} is not valid TOML: {exc}") from exc


def from_mapping(cls: type[T], data: Any, where: str = "") -> T:
    """Validated instance of dataclass `cls` from `data`; `where` names the section in errors."""
    if not isinstance(data, dict):
        raise PocketMLError(f"[{where or cls.__name__}] must be a table of keys, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            raise PocketMLError(_unknown_key_message(where, key, list(fields)))
    hints = get_type_hints(cls)
    values = {key: _coerce(hints[key], value, _join(where, key)) for key, value in data.items()}
    missing = [n for n, f in fields.items() if n not in values and _is_required(f)]
    if missing:
        raise PocketMLError(f"[{where or cls.__name__}] is missing required key(s): {', '.join(missing)}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise PocketMLError(f"[{where or cls.__name__}] {exc}") from exc


def from_settings(cls: type[T], settings: dict, section: str) -> T:
    """`cls` from Python keyword settings, validated as a TOML section is; a None setting means "default"."""
    return from_mapping(cls, {k: v for k, v in settings.items() if v is not None}, section)


def _is_required(field: dataclasses.Field) -> bool:
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


def _unknown_key_message(where: str, key: str, accepted: list[str]) -> str:
    near = difflib.get_close_matches(key, accepted, n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    return f"unknown key {_join(where, key)!r}{hint}; accepted keys: {', '.join(sorted(accepted))}"


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _describe(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in get_args(tp))
    if tp is type(None):
        return "nothing"
    if dataclasses.is_dataclass(tp):
        return f"a table ({tp.__name__})"
    return getattr(tp, "__name__", str(tp))


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = get_origin(tp)
    args = get_args(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if value in args:
            return value
        return _bad(key, value, tp)
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            try:
                return _coerce(arg, value, key)
            except PocketMLError:
                continue
        return _bad(key, value, tp)
    if tp is type(None):
        return value if value is None else _bad(key, value, tp)
    if dataclasses.is_dataclass(tp):
        return from_mapping(tp, value, key)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return _bad(key, value, tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise PocketMLError(f"{key} = {value!r} must have {len(args)} items")
            return tuple(_coerce(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
        item = args[0] if args else Any
        items = [_coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        return value if isinstance(value, dict) else _bad(key, value, tp)
    if tp is bool:
        return value if isinstance(value, bool) else _bad(key, value, tp)
    if tp is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _bad(key, value, tp)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        return _bad(key, value, tp)
    if tp is str:
        return value if isinstance(value, str) else _bad(key, value, tp)
    if tp is Path:
        return Path(value) if isinstance(value, (str, Path)) else _bad(key, value, tp)
    raise TypeError(f"config type {tp!r} for {key} is not supported by from_mapping")


def _bad(key: str, value: Any, tp: Any) -> typing.NoReturn:
    raise PocketMLError(f"{key} = {value!r} is not accepted; expected {_describe(tp)}")
