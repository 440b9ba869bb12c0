"""Brute-force optimum over every feasible mask (test oracle, d ≤ 12 per row, small matrices).

Works from W (rows × d) and G for the patterns 'per_row', 'N:M' (rows are independent, so the
optimum is assembled row by row) and 'unstructured' (all masks of the whole matrix; keep it tiny).
"""
from __future__ import annotations

import itertools

import torch

from maskopt.solve.patterns import Pattern


def feasible_row_masks(d: int, pattern: Pattern, keep: int) -> torch.Tensor:
    """All 0/1 rows (float64, shape (n, d)) with ``keep`` ones per group (row, or block of M)."""
    if pattern.kind == "nm":
        m = pattern.m
        blocks = list(itertools.combinations(range(m), keep))
        out = []
        for choice in itertools.product(blocks, repeat=d // m):
            v = torch.zeros(d, dtype=torch.float64)
            for b, idx in enumerate(choice):
                v[[b * m + i for i in idx]] = 1.0
            out.append(v)
        return torch.stack(out)
    out = []
    for idx in itertools.combinations(range(d), keep):
        v = torch.zeros(d, dtype=torch.float64)
        v[list(idx)] = 1.0
        out.append(v)
    return torch.stack(out)


def row_values(w: torch.Tensor, G: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """f(v) = (w ⊙ (1 − v))ᵀ G (w ⊙ (1 − v)) for every row v of V."""
    R = w.double()[None, :] * (1.0 - V)
    return ((R @ G.double()) * R).sum(1)


def brute_force(W: torch.Tensor, G: torch.Tensor, pattern: Pattern | str, keep: int) -> tuple[float, torch.Tensor]:
    """(optimal error, an optimal bool mask) over all masks feasible for ``pattern`` with ``keep`` per group."""
    pattern = Pattern.parse(pattern)
    W, G = W.double(), G.double()
    rows, d = W.shape
    if pattern.kind == "unstructured":
        n = rows * d
        best, arg = float("inf"), None
        for idx in itertools.combinations(range(n), keep):
            v = torch.zeros(n, dtype=torch.float64)
            v[list(idx)] = 1.0
            M = v.reshape(rows, d)
            R = W * (1 - M)
            val = float(((R @ G) * R).sum())
            if val < best:
                best, arg = val, M
        return best, arg.bool()
    V = feasible_row_masks(d, pattern, keep)
    total, mask = 0.0, torch.zeros(rows, d, dtype=torch.bool)
    for i in range(rows):
        vals = row_values(W[i], G, V)
        k = int(torch.argmin(vals))
        total += float(vals[k])
        mask[i] = V[k].bool()
    return total, mask


def random_problem(rows: int, d: int, seed: int, tokens: int | None = None, dtype=torch.float64):
    """W ~ N(0,1) with a few heavy columns, G = X Xᵀ from correlated inputs with outlier features."""
    g = torch.Generator().manual_seed(seed)
    tokens = tokens or 2 * d
    W = torch.randn(rows, d, generator=g, dtype=torch.float64)
    A = torch.randn(d, d, generator=g, dtype=torch.float64) / d**0.5 + torch.eye(d, dtype=torch.float64)
    X = A @ torch.randn(d, tokens, generator=g, dtype=torch.float64)
    scale = torch.ones(d, dtype=torch.float64)
    scale[torch.randint(0, d, (max(1, d // 8),), generator=g)] = 5.0
    X = X * scale[:, None]
    return W.to(dtype), (X @ X.T).to(dtype)
