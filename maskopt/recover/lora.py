"""Sparsity-keeping LoRA adapters (PERP), as weight parametrizations, and their merge.

MaskLoRA:  W' = W + (α/r) · M ⊙ (B A),  B = 0 at start (so W' = W).
ScaleLoRA: W' = W ⊙ (1 + (α/r) · B A),   B = 0, A random at start (so W' = W, and B A can reach any
           rank ≤ r; with equal constant factors, as a first version had, the gradients of all
           columns stay equal and B A never leaves rank one).
Both keep W'_ij = 0 wherever M_ij = 0 (M the explicit mask). The factors live in the parameter's own
layout (rows × cols of ``module.weight``), so transposed Conv1D weights need no special case.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import parametrize


class MaskLoRA(nn.Module):
    """W ↦ W + (α/r)·M⊙(BA)."""

    def __init__(self, weight: torch.Tensor, r: int, alpha: float, mask: torch.Tensor | None = None):
        super().__init__()
        _lowrank_init(self, weight, r, alpha, mask)

    def forward(self, W: torch.Tensor) -> torch.Tensor:
        return W + (self.scale * (self.B @ self.A)).to(W.dtype) * self.mask


class ScaleLoRA(nn.Module):
    """W ↦ W⊙(1 + (α/r)·BA)."""

    def __init__(self, weight: torch.Tensor, r: int, alpha: float, mask: torch.Tensor | None = None):
        super().__init__()
        _lowrank_init(self, weight, r, alpha, mask)

    def forward(self, W: torch.Tensor) -> torch.Tensor:
        return W * (1 + self.scale * (self.B @ self.A)).to(W.dtype)


def _lowrank_init(lora: nn.Module, weight: torch.Tensor, r: int, alpha: float, mask: torch.Tensor | None) -> None:
    """B = 0 (the product starts at zero), A Kaiming-uniform (as LoRA), the mask as a buffer."""
    rows, cols = weight.shape
    lora.scale = alpha / r
    m = (weight != 0) if mask is None else mask.to(weight.device).bool()
    if tuple(m.shape) != (rows, cols):
        raise ValueError(f"mask shape {tuple(m.shape)} does not match the weight {rows}×{cols}")
    lora.register_buffer("mask", m.to(weight.dtype))
    a = torch.empty(r, cols, device=weight.device, dtype=torch.float32)
    nn.init.kaiming_uniform_(a, a=math.sqrt(5))
    lora.A = nn.Parameter(a)
    lora.B = nn.Parameter(torch.zeros(rows, r, device=weight.device, dtype=torch.float32))


KINDS = {"masklora": MaskLoRA, "scalelora": ScaleLoRA}


def attach_lora(linears: dict[str, nn.Module], kind: str, r: int, alpha: float,
                masks: dict[str, torch.Tensor] | None = None) -> list[nn.Parameter]:
    """Parametrize every linear's weight with a LoRA of ``kind``; returns the new trainable factors.
    The original weights are frozen. ``masks`` (by the same names; default W ≠ 0) are kept exactly."""
    if kind not in KINDS:
        raise ValueError(f"unknown LoRA kind {kind!r}; choose one of {sorted(KINDS)}")
    params: list[nn.Parameter] = []
    for name, module in linears.items():
        module.weight.requires_grad_(False)
        lora = KINDS[kind](module.weight.detach(), r, alpha, None if masks is None else masks[name])
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
