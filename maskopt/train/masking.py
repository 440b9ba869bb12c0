"""Masks of prunable weights: magnitude masks (global or per layer), applying them, and their bookkeeping.

A mask M_l ∈ {0,1}^{shape(W_l)} per prunable weight; pruned entries are exact zeros (W ← W ⊙ M)
and stay zero during retraining (gradients masked before and weights masked after every step).
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
from torch import nn

from .errors import SparsityScheduleError

Masks = dict[str, torch.Tensor]
SCOPES = ("global", "layer")


def check_sparsities(sparsities: Sequence[float]) -> list[float]:
    """Target sparsities as floats, strictly increasing, each in (0, 1); else SparsityScheduleError."""
    out = [float(s) for s in sparsities]
    if not out:
        raise SparsityScheduleError("give at least one target sparsity")
    for s in out:
        if not (math.isfinite(s) and 0 < s < 1):
            raise SparsityScheduleError(f"every sparsity must lie in (0, 1), got {s}")
    for a, b in zip(out, out[1:]):
        if not b > a:
            raise SparsityScheduleError(f"sparsities must be strictly increasing, got {a} then {b} in {out}")
    return out


def current_masks(weights: Mapping[str, torch.Tensor]) -> Masks:
    """M = (W ≠ 0)."""
    return {n: w.detach() != 0 for n, w in weights.items()}


def sparsity_of(masks: Mapping[str, torch.Tensor]) -> float:
    """Fraction of zeros over all masks."""
    total = sum(m.numel() for m in masks.values())
    return 1.0 - sum(int(m.sum()) for m in masks.values()) / max(total, 1)


@torch.no_grad()
def mask_grads(weights: Mapping[str, nn.Parameter], masks: Mapping[str, torch.Tensor]) -> None:
    """∇W ← ∇W ⊙ M, so that momentum and weight decay never touch pruned entries."""
    for n, w in weights.items():
        if w.grad is not None:
            w.grad.mul_(masks[n].to(w.grad.device, w.grad.dtype))


def magnitude_masks(weights: Mapping[str, torch.Tensor], sparsity: float, scope: str = "global") -> Masks:
    """Keep the ⌊(1 − s) N⌉ largest |w| (ties by index), over all weights ('global') or per tensor ('layer').

    Pruned entries (zeros) have the smallest magnitude, so masks only shrink as s grows.
    """
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    if not 0 <= sparsity < 1:
        raise SparsityScheduleError(f"sparsity must lie in [0, 1), got {sparsity}")
    if scope == "layer":
        return {n: _keep_top(w.detach().abs().reshape(-1), round((1 - sparsity) * w.numel())).view_as(w)
                for n, w in weights.items()}
    flat = torch.cat([w.detach().abs().reshape(-1).float().cpu() for w in weights.values()])
    keep = _keep_top(flat, round((1 - sparsity) * flat.numel()))
    out, i = {}, 0
    for n, w in weights.items():
        out[n] = keep[i:i + w.numel()].view(w.shape).to(w.device)
        i += w.numel()
    return out


def _keep_top(scores: torch.Tensor, n_keep: int) -> torch.Tensor:
    m = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    if n_keep > 0:
        m[torch.topk(scores, n_keep, sorted=False).indices] = True
    return m


def prune_stats(before: Mapping[str, torch.Tensor], after: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """What a pruning step did: d = ‖θ − θ_pruned‖/‖θ‖ and s = fraction of formerly nonzero weights removed."""
    num = den = 0.0
    alive_before = removed = 0
    for n, w in before.items():
        w64, a64 = w.detach().double(), after[n].detach().double().to(w.device)
        num += float(((w64 - a64) ** 2).sum())
        den += float((w64 ** 2).sum())
        nz_b, nz_a = w64 != 0, a64 != 0
        alive_before += int(nz_b.sum())
        removed += int((nz_b & ~nz_a).sum())
    return {"rel_norm_drop": math.sqrt(num / den) if den > 0 else 0.0,
            "phase_sparsity": removed / alive_before if alive_before else 0.0}
