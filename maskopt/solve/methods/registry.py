"""One registry of mask-selection methods: adding a method is adding one file.

A method is a small dataclass (its fields are its options) with
``solve(problem: LayerProblem) -> Solution``. It never touches a model.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable, Protocol

from ..problem import LayerProblem, Solution


class Method(Protocol):
    name: str

    def solve(self, problem: LayerProblem) -> Solution: ...


_REGISTRY: dict[str, type] = {}
_BUILTIN = ("magnitude", "wanda", "sparsegpt", "ria", "dsnot", "sparsefw", "sparseswaps", "exact")


def register(name: str) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def _load_builtins() -> None:
    for mod in _BUILTIN:
        try:
            importlib.import_module(f"{__package__}.{mod}")
        except ModuleNotFoundError as e:  # a method file not written yet
            if e.name != f"{__package__}.{mod}":
                raise


def available() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def get_method(name: str, **options: Any) -> Method:
    """Instantiate a registered method; unknown names and options are clear errors."""
    _load_builtins()
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(available())}")
    cls = _REGISTRY[name]
    fields = {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
    unknown = set(options) - set(fields)
    if unknown:
        raise ValueError(f"method {name!r} has no option(s) {sorted(unknown)}; options: {sorted(fields)}")
    return cls(**{k: _coerce(v, fields[k]) for k, v in options.items()})


def method_options(name: str) -> dict[str, Any]:
    """The options of a method with their defaults (for --help and reports)."""
    _load_builtins()
    cls = _REGISTRY[name]
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            out[f.name] = f.default_factory()  # type: ignore[misc]
    return out


def _coerce(value: Any, f: dataclasses.Field) -> Any:
    """Turn CLI strings ('100', '0.3', 'true', 'none') into the field's type."""
    if not isinstance(value, str):
        return value
    t = str(f.type)
    low = value.lower()
    if low in ("none", "null"):
        return None
    if "bool" in t:
        return low in ("1", "true", "yes", "on")
    if "int" in t and "float" not in t:
        try:
            return int(value)
        except ValueError:
            pass
    if "float" in t or "int" in t:
        try:
            return float(value)
        except ValueError:
            pass
    return value
