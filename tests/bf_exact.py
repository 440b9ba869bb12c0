"""Brute-force optimum of one mask row (test oracle): enumerate every feasible mask."""
from __future__ import annotations

import itertools

import numpy as np


def row_masks(d: int, kind: str, keep: int, m: int = 0):
    """Every 0/1 mask of length d with ``keep`` ones per group (whole row, or blocks of m)."""
    if kind == "nm":
        blocks = [list(itertools.combinations(range(m), keep))] * (d // m)
        for choice in itertools.product(*blocks):
            v = np.zeros(d)
            for b, idx in enumerate(choice):
                v[[b * m + i for i in idx]] = 1.0
            yield v
    else:
        for idx in itertools.combinations(range(d), keep):
            v = np.zeros(d)
            v[list(idx)] = 1.0
            yield v


def brute_force_row(w: np.ndarray, G: np.ndarray, kind: str, keep: int, m: int = 0) -> tuple[float, np.ndarray]:
    """(min f, argmin) of f(v) = (w⊙(1−v))ᵀG(w⊙(1−v)); vectorized over all masks."""
    V = np.array(list(row_masks(len(w), kind, keep, m)))
    R = w[None, :] * (1.0 - V)
    vals = np.einsum("ij,jk,ik->i", R, G, R)
    k = int(np.argmin(vals))
    return float(vals[k]), V[k]
