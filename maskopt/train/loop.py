"""The training loop shared by dense training, SFW training and retraining: exactly ``steps`` steps.

Per step t: batch → loss (non-finite: restore the last good checkpoint, raise NonFiniteLossError)
→ backward → gradients of pruned weights zeroed → lr ← lr_at(t) on every group → optimizer step →
pruned weights reset to zero (so the mask provably survives weight decay and momentum).
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable, Iterator, Mapping

import torch
from torch import nn

from .checkpoint import LastGood
from .errors import NonFiniteLossError
from ..model.masks import apply_masks
from .masking import mask_grads
from .workloads.base import Workload

CURVE_POINTS = 100


def train_steps(model: nn.Module, workload: Workload, optimizer: torch.optim.Optimizer,
                lr_at: Callable[[int], float], steps: int, *, seed: int = 0,
                masks: Mapping[str, torch.Tensor] | None = None, guard: LastGood | None = None,
                label: str = "", batches: Iterator[Any] | None = None) -> dict[str, Any]:
    """Train ``model`` in place for exactly ``steps`` optimizer steps; returns a summary.

    Summary: steps, seconds, loss_first, loss_last (mean of the last ≤10 losses), loss_curve (≤100
    evenly spaced losses), lr_first, lr_last.
    """
    if steps < 1:
        raise ValueError(f"a training phase needs at least one step, got {steps}")
    weights = workload.prunable(model) if masks is not None else None
    it = batches if batches is not None else workload.batches(seed)
    model.train()
    losses: list[float] = []
    lrs: list[float] = []
    t0 = time.time()
    for t in range(steps):
        batch = next(it)
        loss = workload.loss(model, batch)
        value = float(loss.detach())
        if not math.isfinite(value):
            optimizer.zero_grad(set_to_none=True)
            if guard is not None:
                guard.restore(model)
            raise NonFiniteLossError(
                f"{label or 'training'}: the loss became {value} at step {t} of {steps}; the model was restored "
                f"to the last good checkpoint ({guard.describe() if guard else 'none kept'}). "
                "Lower the learning rate or check the data.", step=t)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if masks is not None:
            mask_grads(weights, masks)
        lr = float(lr_at(t))
        for g in optimizer.param_groups:
            g["lr"] = lr
        optimizer.step()
        if masks is not None:
            apply_masks(weights, masks)
        losses.append(value)
        lrs.append(lr)
    stride = max(1, len(losses) // CURVE_POINTS)
    return {"steps": steps, "seconds": time.time() - t0, "loss_first": losses[0],
            "loss_last": sum(losses[-10:]) / len(losses[-10:]), "loss_curve": losses[::stride],
            "lr_first": lrs[0], "lr_last": lrs[-1]}
