"""Which tensors of a model an export compresses (sparse linears) and which it stores dense."""
from __future__ import annotations

import torch


def _shared_ids(model: torch.nn.Module) -> set[int]:
    """ids of parameters reachable under more than one name (tied embeddings / lm_head)."""
    seen: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        seen[id(p)] = seen.get(id(p), 0) + 1
    return {k for k, n in seen.items() if n > 1}


def sparse_linears(model: torch.nn.Module, min_sparsity: float = 0.1) -> dict[str, torch.Tensor]:
    """{module name: weight} of the nn.Linear layers with at least ``min_sparsity`` zeros; ``lm_head`` and
    weights tied to another tensor stay dense (as in pruning)."""
    shared = _shared_ids(model)
    out = {}
    for name, mod in model.named_modules():
        if not isinstance(mod, torch.nn.Linear) or name.split(".")[-1] == "lm_head" or id(mod.weight) in shared:
            continue
        W = mod.weight.detach()
        if W.numel() and float((W == 0).float().mean()) >= min_sparsity:
            out[name] = W
    return out


def dense_state(model: torch.nn.Module, skip: set[str] = frozenset()) -> dict[str, torch.Tensor]:
    """The state dict without ``skip`` and without second names of shared tensors (CPU, detached)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for k, v in model.state_dict().items():
        if k in skip:
            continue
        key = v.data_ptr() if v.numel() else id(v)
        if key in seen:
            continue
        seen.add(key)
        out[k] = v.detach().cpu()
    return out


def tied_aliases(model: torch.nn.Module) -> dict[str, set[str]]:
    """name → the other names of the same parameter (for tied weights missing from a file)."""
    groups: dict[int, list[str]] = {}
    for n, p in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(p), []).append(n)
    return {n: set(g) - {n} for g in groups.values() for n in g}
