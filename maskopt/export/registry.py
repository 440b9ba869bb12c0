"""The registry of export formats: ``register_format(name)`` on a class with ``save`` and ``load_state``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..registry import Registry

FORMATS = Registry("export format", [f"{__package__}.{m}" for m in ("hf", "compressed_tensors", "cs256")],
                   normalize=lambda name: name.strip().lower().replace("_", "-"))
register_format = FORMATS.register


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


def available_formats() -> list[str]:
    return FORMATS.names()


def get_format(name: str) -> ExportFormat:
    return FORMATS.get(name)()
