"""Strict KEY=VALUE options for dataclass configs (methods, stages): every key, type and value checked.

Values typed on the command line are strings; each is parsed by the field's annotation: booleans accept
only true/false/1/0/yes/no/on/off, integers and floats must parse, ``Literal[...]`` values must be one of
the choices, ``X | None`` also accepts 'none', dicts take JSON. Anything else is a ValueError naming the
option, so a bad option fails before any model is loaded.
"""
from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from typing import Any, Literal, get_args, get_origin

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def parse_kv(items: list[str] | None, flag: str = "--opt") -> dict[str, str]:
    """['a=1', 'b=x'] → {'a': '1', 'b': 'x'}; an item without '=' is an error naming the flag."""
    out: dict[str, str] = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"{flag} takes KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        if not k.strip():
            raise ValueError(f"{flag} {item!r} has an empty KEY")
        out[k.strip()] = v.strip()
    return out


def parse_value(value: Any, tp: Any, what: str) -> Any:
    """``value`` (a CLI string, or already typed) converted to annotation ``tp``."""
    origin, args = get_origin(tp), get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and isinstance(value, str) and value.lower() in ("none", "null"):
            return None
        if value is None and type(None) in args:
            return None
        rest = [a for a in args if a is not type(None)]
        errors = []
        for a in rest:
            try:
                return parse_value(value, a, what)
            except ValueError as e:
                errors.append(str(e))
        raise ValueError(errors[0] if len(errors) == 1 else f"{what}: {value!r} fits none of {rest}")
    if origin is Literal:
        if value not in args:
            raise ValueError(f"{what} must be one of {', '.join(map(repr, args))}; got {value!r}")
        return value
    if not isinstance(value, str):
        return value
    if tp is bool:
        low = value.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError(f"{what} is a boolean (true/false/1/0/yes/no); got {value!r}")
    if tp is int:
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"{what} expects an integer; got {value!r}") from None
    if tp is float:
        try:
            x = float(value)
        except ValueError:
            raise ValueError(f"{what} expects a number; got {value!r}") from None
        if math.isnan(x):
            raise ValueError(f"{what} may not be NaN")
        return x
    if tp is str or tp is Any:
        return value
    if origin in (dict, list) or tp in (dict, list):
        try:
            out = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(f"{what} expects JSON ({'{...}' if (origin or tp) is dict else '[...]'}); got {value!r}") from None
        if not isinstance(out, origin or tp):
            raise ValueError(f"{what} expects a JSON {(origin or tp).__name__}; got {value!r}")
        return out
    return value


def option_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls)}


def build_options(cls: type, raw: dict[str, Any], what: str) -> dict[str, Any]:
    """Typed values for the dataclass ``cls`` from ``raw`` (unknown keys, bad types and values raise)."""
    types_ = option_types(cls)
    unknown = sorted(set(raw) - set(types_))
    if unknown:
        raise ValueError(f"{what} has no option(s) {unknown}; its options: {', '.join(sorted(types_))}")
    return {k: parse_value(v, types_[k], f"{what} option {k!r}") for k, v in raw.items()}


def defaults(cls: type) -> dict[str, Any]:
    """The options of a dataclass with their default values."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            out[f.name] = f.default_factory()  # type: ignore[misc]
    return out


def field_docs(cls: type) -> dict[str, str]:
    """One-line descriptions of the options: the ``help`` metadata of a field, else its trailing comment
    in the source (``name: type = default  # what it does``)."""
    import inspect  # noqa: PLC0415

    docs = {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}
    try:
        src = inspect.getsource(cls)
    except (OSError, TypeError):
        return docs
    for line in src.splitlines():
        s = line.strip()
        if "#" in s and ":" in s.split("#")[0]:
            name = s.split(":")[0].strip()
            if name in docs and not docs[name]:
                docs[name] = s.split("#", 1)[1].strip()
    return docs
