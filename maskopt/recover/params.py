"""Which parameters recovery may train, masks of the pruned weights, and snapshots to undo."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator

import torch
from torch import nn


def is_norm(module: nn.Module) -> bool:
    """LayerNorm/GroupNorm and the families' own RMSNorm/LayerNorm classes."""
    return isinstance(module, (nn.LayerNorm, nn.GroupNorm)) or type(module).__name__.lower().endswith("norm")


def norm_and_bias_params(root: nn.Module) -> dict[str, nn.Parameter]:
    """Every bias and every parameter of a normalization module under ``root`` (by qualified name)."""
    out: dict[str, nn.Parameter] = {}
    for mname, module in root.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            if pname == "bias" or is_norm(module):
                out[f"{mname}.{pname}" if mname else pname] = p
    return out


ModuleMasks = dict[nn.Module, torch.Tensor]


def weight_masks(linears: dict[str, nn.Module], known: ModuleMasks | None = None) -> dict[str, torch.Tensor]:
    """The mask of every prunable linear (in the parameter's own layout): the explicit mask where one is
    known (``known``, by module), else ``weight != 0`` (a folder pruned without a saved mask)."""
    known = known or {}
    return {name: (known[m] if m in known else m.weight.detach() != 0) for name, m in linears.items()}


def weights_of(linears: dict[str, nn.Module]) -> dict[str, nn.Parameter]:
    """The weight of every named linear (for maskopt.model.masks.apply_masks)."""
    return {name: m.weight for name, m in linears.items()}


def snapshot(params: Iterable[nn.Parameter]) -> list[tuple[nn.Parameter, torch.Tensor]]:
    return [(p, p.detach().clone()) for p in params]


@torch.no_grad()
def restore(snap: list[tuple[nn.Parameter, torch.Tensor]]) -> None:
    for p, saved in snap:
        p.data = saved.to(p.device, p.dtype)


@contextmanager
def frozen(*models: nn.Module) -> Iterator[None]:
    """requires_grad=False on every parameter and eval mode for the duration; both restored after."""
    flags = [(p, p.requires_grad) for m in models for p in m.parameters()]
    modes = [(m, m.training) for m in models]
    for p, _ in flags:
        p.requires_grad_(False)
    for m in models:
        m.eval()
    try:
        yield
    finally:
        for p, f in flags:
            p.requires_grad_(f)
        for m, t in modes:
            m.train(t)
