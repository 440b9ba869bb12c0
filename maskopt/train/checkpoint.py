"""The last good checkpoint: the model state (and masks) at the end of the last finished phase.

Kept in memory to restore the model when training fails (non-finite loss), and mirrored to disk
(``<dir>/last_good/``: model.pt, masks.pt, checkpoint.json) written atomically, so a failed or
interrupted run always leaves the previous good state in place.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ..io import atomic_dir, write_json


class LastGood:
    def __init__(self, directory: str | Path | None = None):
        self.directory = Path(directory) if directory is not None else None
        self.state: dict[str, torch.Tensor] | None = None
        self.masks: dict[str, torch.Tensor] | None = None
        self.info: dict[str, Any] = {}

    @torch.no_grad()
    def save(self, model: nn.Module, masks: Mapping[str, torch.Tensor] | None = None, **info: Any) -> None:
        """Remember the model's current state as the last good one (and write it, if a directory was given)."""
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.masks = {k: v.clone() for k, v in masks.items()} if masks is not None else None
        self.info = copy.deepcopy(info)
        if self.directory is not None:
            with atomic_dir(self.directory / "last_good", overwrite=True) as tmp:
                torch.save(self.state, tmp / "model.pt")
                if self.masks is not None:
                    torch.save(self.masks, tmp / "masks.pt")
                write_json(tmp / "checkpoint.json", self.info)

    @torch.no_grad()
    def restore(self, model: nn.Module) -> None:
        """Put the last good state back into ``model`` (no-op if none was saved)."""
        if self.state is not None:
            model.load_state_dict(self.state)

    def describe(self) -> str:
        where = f" in {self.directory / 'last_good'}" if self.directory is not None else ""
        return f"{self.info.get('label', 'the last good state')}{where}" if self.state is not None else "none"


def load_last_good(directory: str | Path) -> tuple[dict, dict | None, dict]:
    """(state_dict, masks or None, info) of ``<directory>/last_good``."""
    import json  # noqa: PLC0415

    d = Path(directory) / "last_good"
    state = torch.load(d / "model.pt", weights_only=True)
    masks = torch.load(d / "masks.pt", weights_only=True) if (d / "masks.pt").exists() else None
    return state, masks, json.loads((d / "checkpoint.json").read_text())
