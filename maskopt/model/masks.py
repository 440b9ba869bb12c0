"""Masks applied to weights: the one place where pruned entries are set back to exact zeros."""
from __future__ import annotations

from typing import Mapping

import torch


@torch.no_grad()
def apply_masks(weights: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor]) -> None:
    """W ← W ⊙ M in place, for every named weight (a parameter or a module's ``weight``)."""
    for name, w in weights.items():
        w.mul_(masks[name].to(w.device, w.dtype))
