"""One row of a pruning problem solved to proven optimality (the mask fast path).

Row i: minimize f(m) = (w⊙(1−m))ᵀ G (w⊙(1−m)) over m ∈ {0,1}^d with the pattern's group
counts. With z = 1 − m and Q = D_w G D_w, f = zᵀQz. Because z_j² = z_j on binaries,
for any diagonal S with Q − S ⪰ 0

    f̃(m) = zᵀ(Q − S)z + Σ_j S_jj z_j   equals f on every mask and f̃ ≥ f on [0,1]^d,

so its relaxation gives a tighter valid bound (a diagonal "convex reformulation").
We use S = μ·diag(Q) with μ = λ_min(diag(G)^{-½} G diag(G)^{-½}) (the same μ for every
row). The B&B runs on f̃ with the top-k LMO; incumbents are seeded by Wanda, the
caller's masks and 1-swap local search.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from .local_search import swap_descent
from .lmo import MaskLMO
from .objectives import QuadraticObjective
from .tree import BnBConfig, BranchAndBound


def jacobi_shift(G: np.ndarray, safety: float = 1e-7) -> float:
    """μ ≥ 0 with G − μ·diag(G) ⪰ 0: the smallest eigenvalue of the unit-diagonal scaling of G."""
    G = np.asarray(G, dtype=np.float64)
    dg = np.diag(G)
    live = dg > 0
    if live.sum() == 0:
        return 0.0
    s = 1.0 / np.sqrt(dg[live])
    C = G[np.ix_(live, live)] * s[:, None] * s[None, :]
    lam = float(np.linalg.eigvalsh(0.5 * (C + C.T))[0])
    return max(0.0, lam * (1.0 - safety) - safety)


def row_objective(w: np.ndarray, G: np.ndarray, mu: float = 0.0) -> QuadraticObjective:
    """f̃ in the kept-indicator m: A = Q − S, b = −2A1 − diag(S), c = 1ᵀA1 + tr S."""
    w = np.asarray(w, dtype=np.float64)
    Q = w[:, None] * np.asarray(G, dtype=np.float64) * w[None, :]
    s = mu * np.diag(Q)
    A = Q - np.diag(s)
    A1 = A.sum(1)
    return QuadraticObjective(A, -2.0 * A1 - s, float(A1.sum() + s.sum()))


def row_error(w: np.ndarray, G: np.ndarray, m: np.ndarray) -> float:
    r = np.asarray(w, dtype=np.float64) * (1.0 - np.asarray(m, dtype=np.float64))
    return float(r @ (np.asarray(G, dtype=np.float64) @ r))


@dataclass
class RowResult:
    mask: np.ndarray  # bool (d,)
    error: float  # f(mask)
    lower_bound: float  # certified: every feasible mask has f ≥ lower_bound
    status: str
    nodes: int
    time: float
    root_bound: float
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def gap(self) -> float:
        diff = max(self.error - self.lower_bound, 0.0)
        return diff / self.error if self.error > 0 else 0.0


def seed_masks(w: np.ndarray, G: np.ndarray, lmo: MaskLMO, seeds: Iterable[np.ndarray] = (), local_search: bool = True) -> list[np.ndarray]:
    """Wanda's mask plus the given ones, each improved by 1-swaps."""
    score = np.abs(w) * np.sqrt(np.clip(np.diag(G), 0, None))
    zero = np.zeros(len(w))
    out = [lmo(-score, zero, np.ones(len(w)))]
    out += [np.asarray(s, dtype=np.float64) for s in seeds]
    if local_search:
        out = [swap_descent(m, w, G, lmo.groups) for m in out]
    return out


def solve_row(
    w: np.ndarray,
    G: np.ndarray,
    lmo: MaskLMO,
    *,
    config: BnBConfig | None = None,
    seeds: Iterable[np.ndarray] = (),
    mu: float | None = None,
    local_search: bool = True,
) -> RowResult:
    """Minimize (w⊙(1−m))ᵀG(w⊙(1−m)) over the masks of ``lmo`` by B&B; anytime with a certified bound."""
    w = np.asarray(w, dtype=np.float64)
    G = np.asarray(G, dtype=np.float64)
    if mu is None:
        mu = jacobi_shift(G)
    f = row_objective(w, G, mu)
    d = len(w)
    bnb = BranchAndBound(f, lmo, np.zeros(d), np.ones(d), config=config)
    for m in seed_masks(w, G, lmo, seeds, local_search):
        bnb.offer(m)
    res = bnb.solve()
    mask = res.x > 0.5
    err = row_error(w, G, mask)
    lb = min(res.lower_bound, err)
    return RowResult(
        mask=mask,
        error=err,
        lower_bound=lb,
        status=res.status,
        nodes=res.nodes,
        time=res.time,
        root_bound=min(res.root_bound, err) if math.isfinite(res.root_bound) else lb,
        info={"iterations": res.iterations, "lmo_calls": res.lmo_calls, "mu": mu, **res.info},
    )
