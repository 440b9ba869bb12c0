"""Warm starts from masks that exist already: the zeros of a model pruned elsewhere (or saved without masks),
completed to a pattern's counts, and the layout of such a mask (which pattern, which count per row)."""
from __future__ import annotations

import torch

from .patterns import Pattern
from .problem import LayerProblem

NM_CANDIDATES = ((2, 4), (4, 8), (1, 4), (1, 2), (2, 8))


def mask_from_pruned(W_pruned: torch.Tensor, W_dense: torch.Tensor, problem: LayerProblem) -> torch.Tensor:
    """The mask of a saved pruned layer without an explicit mask: its non-zeros, completed to the pattern's
    counts with entries whose dense weight is zero (they cost nothing either way), then any pruned entries."""
    mask = W_pruned != 0
    if problem.is_feasible(mask):
        return mask
    pat = problem.pattern
    g_mask = pat.to_groups(mask.clone())
    missing = problem.keep - g_mask.sum(1)
    if (missing < 0).any():
        raise ValueError(f"{problem.name}: keeps more weights than pattern {pat} at sparsity {problem.sparsity} allows")
    prio = (~g_mask).to(torch.float32) * (1.0 + (pat.to_groups(W_dense) == 0).to(torch.float32))
    order = torch.argsort(prio, dim=1, descending=True, stable=True)
    take = torch.arange(order.shape[1])[None, :] < missing[:, None]
    g_mask.scatter_(1, order, g_mask.gather(1, order) | take)
    return pat.from_groups(g_mask, *mask.shape)


def existing_layout(mask: torch.Tensor, name: str = "") -> list[tuple[torch.Tensor, Pattern, float]]:
    """How to polish an existing mask (rows × d, True = kept) without changing any row's count:
    [(rows, pattern, sparsity)]. An N:M mask (every block of M keeps ≤ N, nearly all exactly N: kept weights that
    are exactly zero look pruned) is one N:M group; otherwise the rows are grouped by their kept count and each
    group is per-row at its own count (an unstructured mask keeps its per-row counts, so its sparsity)."""
    rows, d = mask.shape
    counts = mask.sum(1)
    if bool((counts >= d).any()):
        r = int(torch.nonzero(counts >= d)[0, 0])
        raise ValueError(f"{name}: row {r} has no zeros, so there is no mask to start from (leave the layer "
                         "dense with --ignore, or prune it with another warm start)")
    for n, m in NM_CANDIDATES:
        if d % m == 0:
            blocks = mask.reshape(rows, d // m, m).sum(-1)
            if bool((blocks <= n).all()) and float(blocks.float().mean()) >= n - 0.25:
                return [(torch.arange(rows), Pattern("nm", n=n, m=m), 1.0 - n / m)]
    out = []
    for c in torch.unique(counts).tolist():
        idx = torch.nonzero(counts == c)[:, 0]
        out.append((idx, Pattern("per_row"), (d - int(c) + 0.5) / d))
    return out
