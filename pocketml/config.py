"""Configuration is data: dataclasses validated at the edge.

`from_mapping(Cls, data, where)` builds a dataclass from a TOML/JSON mapping, rejecting unknown
keys (suggesting the nearest valid name) and wrong types with one line that names the key, the
value and what is accepted. Stage sections live in `pocketml/configs/<stage>.py`.

A command's flags are derived from the same class: each stage's CLI declares `Flag`s (flag name,
field, help) and `add_flags` takes the type and the default from the config class, so the CLI,
the TOML section and the Python API accept the same values and are validated by the same code.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import tomllib
import types
import typing
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Flag:
    """A command-line flag that sets one config field; its type and default come from the config class."""

    name: str  # "--epochs"
    field: str  # "epochs_frozen"
    help: str
    metavar: str | None = None  # default: from the field's type (N, X, NAME, PATH, N,N,...)


def add_flags(parser: argparse.ArgumentParser, cls: type, flags: tuple[Flag, ...]) -> None:
    """One option per Flag; a flag left out is None, so the TOML's value (or the default) stands."""
    hints = get_type_hints(cls)
    defaults = {f.name: _default(f) for f in dataclasses.fields(cls)}
    for flag in flags:
        tp, default = hints[flag.field], defaults[flag.field]
        if tp is bool:  # a switch that turns the default around (--no-augment)
            parser.add_argument(flag.name, dest=flag.field, action="store_const", const=not default, default=None,
                                help=flag.help)
            continue
        shown = "" if default in (None, "", []) or "default" in flag.help else f" (default: {_shown(default)})"
        parser.add_argument(flag.name, dest=flag.field, type=_flag_type(tp), default=None,
                            metavar=flag.metavar or _metavar(tp), help=flag.help + shown)


def settings_from_flags(args: argparse.Namespace, flags: tuple[Flag, ...]) -> dict:
    """{field: value} of the flags that were given."""
    return {f.field: getattr(args, f.field) for f in flags if getattr(args, f.field, None) is not None}


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    return field.default_factory() if field.default_factory is not dataclasses.MISSING else None


def _shown(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value).replace("%", "%%")


def _plain(tp: Any) -> Any:
    """`X | None` -> X: a flag is either given (a value) or not (None)."""
    if get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else str
    return tp


def _flag_type(tp: Any) -> Any:
    tp = _plain(tp)
    if get_origin(tp) in (list, tuple):
        item = (get_args(tp) or (str,))[0]

        def items(text: str) -> list:
            try:
                return [item(part.strip()) for part in text.split(",") if part.strip()]
            except ValueError:
                raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of {item.__name__}") from None

        return items
    return tp if tp in (int, float, str, Path) else str


def _metavar(tp: Any) -> str:
    tp = _plain(tp)
    if get_origin(tp) in (list, tuple):
        return "N,N,..." if (get_args(tp) or (str,))[0] in (int, float) else "A,B,..."
    if get_origin(tp) is Literal:
        return "{" + ",".join(map(str, get_args(tp))) + "}"
    return {int: "N", float: "X", Path: "PATH"}.get(tp, "NAME")
