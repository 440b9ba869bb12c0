"""The stage registry: a run is a list of stages over one shared context (see maskopt.runner).

    [Evaluate("dense"), Prune(config), Reconstruct("matrix"), Evaluate("pruned"), Save(out)]

A stage is a small class holding its options (a dataclass, ``Options``) with ``run(ctx)``. It declares
whether it walks the blocks (``walks``: resumable after every block), whether it needs the dense model
beside the changed one (``needs_dense``) and what it changes (``changes``: None, 'blocks' or 'all').
Adding a recovery mode or an export format is one file with a registered stage: recovery stages are
registered with ``kind='recover'`` so ``--recover NAME[:k=v,...]`` can name them.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable, ClassVar

from .options import build_options


class Stage:
    """Base of the stages: ``options`` (a dataclass instance) and what the runner needs to know."""

    name: ClassVar[str] = "stage"
    Options: ClassVar[type]
    walks: ClassVar[bool] = False
    needs_dense: ClassVar[bool] = False
    needs_windows: ClassVar[bool] = False
    changes: ClassVar[str | None] = None

    def __init__(self, options: Any, name: str | None = None):
        self.options = options
        if name is not None:
            self.name = name

    def run(self, ctx: Any) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def spec(self) -> dict[str, Any]:
        """What identifies the stage in a run's fingerprint: its name and options."""
        return {"stage": self.name, **dataclasses.asdict(self.options)}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.options!r})"


_STAGES: dict[str, tuple[type, str, dict[str, Any]]] = {}  # name → (class, kind, preset options)
_BUILTIN = ("maskopt.recover.stages",)


def register_stage(name: str, kind: str = "stage", **preset: Any) -> Callable[[type], type]:
    """Register ``cls`` under ``name``; ``preset``: options this name fixes (e.g. granularity='matrix')."""

    def deco(cls: type) -> type:
        _STAGES[name] = (cls, kind, preset)
        return cls

    return deco


def _load_builtins() -> None:
    for mod in _BUILTIN:
        importlib.import_module(mod)


def stage_names(kind: str | None = None) -> list[str]:
    _load_builtins()
    return sorted(n for n, (_, k, _) in _STAGES.items() if kind is None or k == kind)


def stage_info(name: str) -> tuple[type, str, dict[str, Any]]:
    _load_builtins()
    return _STAGES[name]


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """'NAME' or 'NAME:k=v,k2=v2' → (NAME, {k: v})."""
    name, _, rest = spec.partition(":")
    opts: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        if "=" not in part:
            raise ValueError(f"option {part!r} in {spec!r} is not KEY=VALUE")
        k, v = part.split("=", 1)
        opts[k.strip()] = v.strip()
    return name.strip(), opts


def make_stage(spec: str, kind: str | None = None, options: dict[str, Any] | None = None) -> Stage:
    """A registered stage from 'NAME[:k=v,...]' plus ``options``; every option is validated now, before
    any model is loaded."""
    _load_builtins()
    name, raw = parse_spec(spec)
    raw = {**raw, **(options or {})}
    names = stage_names(kind)
    if name not in names:
        raise ValueError(f"unknown {kind or 'stage'} {name!r}; choose one of: {', '.join(names)}")
    cls, _, preset = _STAGES[name]
    what = f"{kind or 'stage'} {name!r}"
    fixed = sorted(set(raw) & set(preset))
    if fixed:
        raise ValueError(f"{what} fixes {fixed}; choose another {kind or 'stage'} name instead")
    typed = build_options(cls.Options, raw, what)
    return cls(cls.Options(**preset, **typed), name)
