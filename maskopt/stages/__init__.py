"""Stages: a run is a list of stages over one shared context (maskopt.run).

    [Evaluate("dense"), Prune(config), Reconstruct("matrix"), Evaluate("pruned"), Save(out)]

A stage is a small class holding its options (a dataclass, ``Options``) with ``run(ctx)``. It declares
whether it walks the blocks (``walks``: resumable after every block), whether it needs the dense model
beside the changed one (``needs_dense``), calibration windows (``needs_windows``), what it changes
(``changes``: None, 'blocks' or 'all') and whether only the main rank of a torchrun job runs it
(``main_rank_only``). Every stage is one file here, registered by name (recovery modes with
``kind='recover'``, so ``--recover NAME[:k=v,...]`` can name them).
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from ..options import build_options
from ..registry import Registry

STAGES = Registry("stage", [f"{__name__}.{m}" for m in ("prune", "evaluate", "recover", "certify", "save", "export")])


class Stage:
    """Base of the stages: ``options`` (a dataclass instance) and what the run loop needs to know."""

    name: ClassVar[str] = "stage"
    Options: ClassVar[type]
    walks: ClassVar[bool] = False
    needs_dense: ClassVar[bool] = False
    needs_windows: ClassVar[bool] = False
    changes: ClassVar[str | None] = None
    main_rank_only: ClassVar[bool] = False  # under torchrun only rank 0 runs it (writing, evaluating)

    def __init__(self, options: Any = None, name: str | None = None):
        self.options = options if options is not None else self.Options()
        if name is not None:
            self.name = name

    def run(self, ctx: Any) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def spec(self) -> dict[str, Any]:
        """What identifies the stage in a run's fingerprint: its name and options."""
        return {"stage": self.name, **dataclasses.asdict(self.options)}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.options!r})"


def register_stage(name: str, kind: str = "stage", **preset: Any):
    """Register a stage class under ``name``; ``preset``: options this name fixes (e.g. granularity='matrix')."""
    return STAGES.register(name, kind=kind, preset=preset)


def stage_names(kind: str | None = None) -> list[str]:
    return STAGES.names(kind=kind) if kind else STAGES.names()


def stage_info(name: str) -> tuple[type, str, dict[str, Any]]:
    cls, meta = STAGES.entry(name)
    return cls, meta["kind"], meta["preset"]


def new_stage(name: str, options: Any = None, **fields: Any) -> Stage:
    """The registered stage ``name`` with ``options`` (its Options instance) or its Options built from ``fields``."""
    cls = STAGES.get(name)
    return cls(options if options is not None else cls.Options(**fields))


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
    name, raw = parse_spec(spec)
    raw = {**raw, **(options or {})}
    cls, meta = STAGES.entry(name, **({"kind": kind} if kind else {}))
    preset = meta["preset"]
    what = f"{kind or 'stage'} {name!r}"
    fixed = sorted(set(raw) & set(preset))
    if fixed:
        raise ValueError(f"{what} fixes {fixed}; choose another {kind or 'stage'} name instead")
    typed = build_options(cls.Options, raw, what)
    return cls(cls.Options(**preset, **typed), name)
