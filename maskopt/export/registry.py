"""The registry of export formats: ``register_format(name)`` on a class with ``save`` and ``load_state``."""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Callable

import torch

_FORMATS: dict[str, type["ExportFormat"]] = {}
_BUILTIN = {"hf": "hf", "compressed-tensors": "compressed_tensors", "cs256": "cs256"}


class ExportFormat:
    """One on-disk layout. ``save`` writes weights and config into a fresh folder and returns statistics
    (its ``sha256`` entry maps file names to digests that loading verifies); ``load_state`` returns the
    model's full state dict (dense tensors, names as in ``model.state_dict()``)."""

    name: str = ""
    uses_masks: bool = False  # save() takes ``masks`` ({module name: bool mask}, kept zeros included)

    def save(self, model: torch.nn.Module, out: Path, **opts: Any) -> dict[str, Any]:
        raise NotImplementedError

    def load_state(self, path: Path, info: dict[str, Any]) -> dict[str, torch.Tensor]:
        raise NotImplementedError


def register_format(name: str) -> Callable[[type[ExportFormat]], type[ExportFormat]]:
    def deco(cls: type[ExportFormat]) -> type[ExportFormat]:
        cls.name = name
        _FORMATS[name] = cls
        return cls

    return deco


def _load_builtins() -> None:
    for mod in _BUILTIN.values():
        importlib.import_module(f"{__package__}.{mod}")


def available_formats() -> list[str]:
    _load_builtins()
    return sorted(_FORMATS)


def get_format(name: str) -> ExportFormat:
    _load_builtins()
    key = name.strip().lower().replace("_", "-")
    if key not in _FORMATS:
        raise ValueError(f"unknown export format {name!r}; available: {', '.join(available_formats())}")
    return _FORMATS[key]()
