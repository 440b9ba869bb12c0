"""Sparsity-keeping LoRA adapters (PERP), as weight parametrizations, and their merge.

MaskLoRA:  W' = W + (α/r) · M ⊙ (B A),  B = 0 at start (so W' = W).
ScaleLoRA: W' = W ⊙ (B A),              A, B = 1/√r everywhere at start (so B A = 1).
Both keep W'_ij = 0 wherever M_ij = 0 (M = W ≠ 0). The factors live in the parameter's own
layout (rows × cols of ``module.weight``), so transposed Conv1D weights need no special case.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import parametrize


class MaskLoRA(nn.Module):
    """W ↦ W + (α/r)·M⊙(BA)."""

    def __init__(self, weight: torch.Tensor, r: int, alpha: float):
        super().__init__()
        rows, cols = weight.shape
        self.scale = alpha / r
        self.register_buffer("mask", (weight != 0).to(weight.dtype))
        a = torch.empty(r, cols, device=weight.device, dtype=torch.float32)
        nn.init.kaiming_uniform_(a, a=math.sqrt(5))
        self.A = nn.Parameter(a)
        self.B = nn.Parameter(torch.zeros(rows, r, device=weight.device, dtype=torch.float32))

    def forward(self, W: torch.Tensor) -> torch.Tensor:
        return W + (self.scale * (self.B @ self.A)).to(W.dtype) * self.mask


class ScaleLoRA(nn.Module):
    """W ↦ W⊙(BA)."""

    def __init__(self, weight: torch.Tensor, r: int, alpha: float | None = None):
        super().__init__()
        rows, cols = weight.shape
        v = 1.0 / math.sqrt(r)
        self.register_buffer("mask", (weight != 0).to(weight.dtype))
        self.A = nn.Parameter(torch.full((r, cols), v, device=weight.device, dtype=torch.float32))
        self.B = nn.Parameter(torch.full((rows, r), v, device=weight.device, dtype=torch.float32))

    def forward(self, W: torch.Tensor) -> torch.Tensor:
        return W * (self.B @ self.A).to(W.dtype)


KINDS = {"masklora": MaskLoRA, "scalelora": ScaleLoRA}


def attach_lora(linears: dict[str, nn.Module], kind: str, r: int, alpha: float) -> list[nn.Parameter]:
    """Parametrize every linear's weight with a LoRA of ``kind``; returns the new trainable factors.
    The original weights are frozen."""
    if kind not in KINDS:
        raise ValueError(f"unknown LoRA kind {kind!r}; choose one of {sorted(KINDS)}")
    params: list[nn.Parameter] = []
    for module in linears.values():
        module.weight.requires_grad_(False)
        lora = KINDS[kind](module.weight.detach(), r, alpha)
        parametrize.register_parametrization(module, "weight", lora, unsafe=True)
        module.parametrizations.weight.original.requires_grad_(False)
        params += [lora.A, lora.B]
    return params


@torch.no_grad()
def merge_lora(linears: dict[str, nn.Module], *, keep: bool = True) -> None:
    """Remove the parametrizations; ``keep``: W ← W' ⊙ M (merged), else back to the original W.
    Afterwards the modules are plain again (no extra parameters or buffers)."""
    for module in linears.values():
        if not parametrize.is_parametrized(module, "weight"):
            continue
        lora = module.parametrizations.weight[0]
        mask = lora.mask
        if keep:
            merged = module.weight.detach().clone()
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
            module.weight.copy_(merged * mask)
        else:
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
        module.weight.requires_grad_(False)
