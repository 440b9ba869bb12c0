"""One registry of mask-selection methods: adding a method is adding one file.

A method is a small dataclass (its fields are its options) with
``solve(problem: LayerProblem) -> Solution``. It never touches a model.
"""
from __future__ import annotations

from typing import Any, Protocol

from ...registry import Registry
from ..problem import LayerProblem, Solution


class Method(Protocol):
    name: str

    def solve(self, problem: LayerProblem) -> Solution: ...


_BUILTIN = ("magnitude", "wanda", "sparsegpt", "ria", "dsnot", "sparsefw", "sparseswaps", "exact", "alps", "refitswaps", "existing")
METHODS = Registry("method", [f"{__package__}.{m}" for m in _BUILTIN])
register = METHODS.register


def available() -> list[str]:
    return METHODS.names()


def method_class(name: str) -> type:
    return METHODS.get(name)


def get_method(name: str, **options: Any) -> Method:
    """Instantiate a registered method; unknown names, options, types and values are clear errors."""
    from ...options import build_options  # noqa: PLC0415

    cls = method_class(name)
    method = cls(**build_options(cls, options, f"method {name!r}"))
    check = getattr(method, "validate", None)
    if callable(check):
        check()
    return method


def check_warm_start(owner: str, name: str, options: dict[str, Any] | None = None) -> None:
    """A warm-start method named in another method's options must exist (and take those options)."""
    if name == owner:
        raise ValueError(f"{owner} cannot warm-start from itself")
    if name not in available():
        raise ValueError(f"{owner}: unknown warm start {name!r}; available: {', '.join(available())}")
    get_method(name, **(options or {}))


def method_options(name: str) -> dict[str, Any]:
    """The options of a method with their defaults (for --help and reports)."""
    from ...options import defaults  # noqa: PLC0415

    return defaults(method_class(name))
