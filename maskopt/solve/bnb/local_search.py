"""1-swap local search for one row of a mask problem (seeds incumbents).

Swapping kept i (now pruned) with pruned j (now kept) inside one group changes
r = w⊙(1−m) to r + w_i e_i − w_j e_j and the error f = rᵀGr by
    Δ_ij = 2 w_i (Gr)_i + w_i² G_ii − 2 w_j (Gr)_j + w_j² G_jj − 2 w_i w_j G_ij.
"""
from __future__ import annotations

import numpy as np


def swap_descent(m: np.ndarray, w: np.ndarray, G: np.ndarray, groups: np.ndarray, max_swaps: int = 1000) -> np.ndarray:
    """Best-improvement 1-swaps within groups until no swap lowers f; returns the new 0/1 mask.

    ``groups``: an (n_groups, size) index array, or a 1-D group id per input.
    """
    m = np.asarray(m, dtype=np.float64).copy()
    groups = np.asarray(groups)
    if groups.ndim == 1:
        gid = groups
    else:
        gid = np.empty(len(w), dtype=np.int64)
        gid[groups.ravel()] = np.repeat(np.arange(groups.shape[0]), groups.shape[1])
    same = gid[:, None] == gid[None, :]
    dg = np.diag(G)
    r = w * (1.0 - m)
    Gr = G @ r
    f = float(r @ Gr)
    wGw = w[:, None] * G * w[None, :]
    for _ in range(max_swaps):
        a = 2.0 * w * Gr
        b = w * w * dg
        delta = (a + b)[:, None] + (b - a)[None, :] - 2.0 * wGw
        ok = same & (m > 0.5)[:, None] & (m < 0.5)[None, :]
        if not ok.any():
            break
        delta = np.where(ok, delta, np.inf)
        k = int(np.argmin(delta))
        i, j = divmod(k, len(w))
        if not delta[i, j] < -1e-13 * max(abs(f), 1e-300):
            break
        m[i], m[j] = 0.0, 1.0
        Gr += G[:, i] * w[i] - G[:, j] * w[j]
        f += float(delta[i, j])
    return m
