"""One row of a pruning problem solved to proven optimality (the mask fast path).

Row i: minimize f(m) = (w⊙(1−m))ᵀ G (w⊙(1−m)) over m ∈ {0,1}^d with the pattern's group
counts. With z = 1 − m and Q = D_w G D_w, f = zᵀQz. Because z_j² = z_j on binaries,
for any diagonal S with Q − S ⪰ 0

    f̃(m) = zᵀ(Q − S)z + Σ_j S_jj z_j   equals f on every mask and f̃ ≥ f on [0,1]^d,

so its relaxation gives a tighter valid bound (a diagonal "convex reformulation").
We use S = μ·diag(Q) with μ = λ_min(diag(G)^{-½} G diag(G)^{-½}) (the same μ for every
row). The B&B runs on f̃ with the top-k LMO; incumbents are seeded by the top-k of
w²·diag(G), the caller's masks and 1-swap local search. ``solve_rows`` is the one bridge
from a LayerProblem to these rows (used by method 'exact' and by certify).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import torch

from ..problem import LayerProblem
from .local_search import swap_descent
from .lmo import MaskLMO
from .objectives import QuadraticObjective
from .tree import BnBConfig, BranchAndBound, relative_gap


def correlation_extremes(G: torch.Tensor | np.ndarray) -> tuple[float, float]:
    """(λ_min, λ_max) of C = diag(G)^{-½} G diag(G)^{-½} over the live inputs (G_jj > 0), float64.

    A dead input has a zero row and column in a Gram matrix, so it adds nothing; (0, 0) when
    every input is dead. One eigvalsh; accepts a tensor or an ndarray.
    """
    G = torch.as_tensor(G).to(torch.float64)
    dg = G.diagonal()
    live = dg > 0
    if not bool(live.any()):
        return 0.0, 0.0
    s = dg[live].rsqrt()
    C = G[live][:, live] * s[:, None] * s[None, :]
    lam = torch.linalg.eigvalsh(0.5 * (C + C.T))
    return float(lam[0]), float(lam[-1])


def jacobi_shift(G: torch.Tensor | np.ndarray, safety: float = 1e-7, lam_min: float | None = None) -> float:
    """μ ≥ 0 with G − μ·diag(G) ⪰ 0.

    μ = λ_min(C) (correlation_extremes, or ``lam_min`` when the caller has it), lowered by a
    relative ``safety`` margin against rounding. The one Jacobi shift of the package (B&B rows and
    the certified bounds); accepts a tensor or an ndarray, computes in float64.
    """
    lam = correlation_extremes(G)[0] if lam_min is None else lam_min
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
        return relative_gap(self.error, self.lower_bound)


def seed_masks(w: np.ndarray, G: np.ndarray, lmo: MaskLMO, seeds: Iterable[np.ndarray] = (), local_search: bool = True) -> list[np.ndarray]:
    """The row's own start (top-k of w_j²·G_jj: the mask minimising the diagonal part of f, the same
    ranking as Wanda's score |w_j|·‖x_j‖) plus the given ones, each improved by 1-swaps."""
    score = np.abs(w) * np.sqrt(np.clip(np.diag(G), 0, None))
    zero = np.zeros(len(w))
    out = [lmo(-score, zero, np.ones(len(w)))]
    out += [np.asarray(s, dtype=np.float64) for s in seeds]
    if local_search:
        out = [swap_descent(m, w, G, lmo) for m in out]
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


@dataclass
class RowsResult:
    """Branch-and-bound results for chosen rows of a layer (index k of every field ↔ ``rows[k]``)."""

    rows: list[int]
    masks: torch.Tensor  # bool (len(rows), d): the best mask found per row
    errors: torch.Tensor  # float64: f(mask) per row
    lower_bounds: torch.Tensor  # float64: certified per-row bounds, ≤ errors
    statuses: list[str]
    nodes: int
    mu: float  # the Jacobi shift the rows were reformulated with

    @property
    def n_optimal(self) -> int:
        return sum(s == "optimal" for s in self.statuses)


def solve_rows(
    problem: LayerProblem,
    rows: Iterable[int],
    *,
    seed_mask: torch.Tensor | None = None,
    config: BnBConfig | None = None,
    mu: float | None = None,
    local_search: bool = True,
) -> RowsResult:
    """The bridge from a LayerProblem (per-row or N:M pattern) to one ``solve_row`` per chosen row.

    Row i minimises (w_i⊙(1−m))ᵀG(w_i⊙(1−m)) over the masks of the pattern (rows are independent).
    ``seed_mask`` (rows × d) offers its row i as an incumbent of row i; ``mu`` defaults to
    jacobi_shift(G), computed once for all rows. W and G are taken in float64 on the CPU.
    """
    pat = problem.pattern
    if not pat.rowwise:
        raise ValueError("per-row branch-and-bound needs a per-row or N:M pattern (unstructured couples all rows)")
    rows = list(rows)
    W = problem.W.detach().to(torch.float64).cpu().numpy()
    G = problem.G.detach().to(torch.float64).cpu().numpy()
    seeds = None if seed_mask is None else seed_mask.detach().cpu().numpy().astype(np.float64)
    lmo = MaskLMO.for_pattern(problem.d, pat.kind, problem.keep, pat.m, g=pat.g)
    if mu is None:
        mu = jacobi_shift(G)
    masks = np.zeros((len(rows), problem.d), dtype=bool)
    errors, bounds, statuses, nodes = np.zeros(len(rows)), np.zeros(len(rows)), [], 0
    for k, i in enumerate(rows):
        res = solve_row(W[i], G, lmo, config=config, seeds=() if seeds is None else [seeds[i]], mu=mu,
                        local_search=local_search)
        masks[k], errors[k], bounds[k] = res.mask, res.error, res.lower_bound
        statuses.append(res.status)
        nodes += res.nodes
    return RowsResult(rows, torch.from_numpy(masks), torch.from_numpy(errors), torch.from_numpy(bounds),
                      statuses, nodes, float(mu))
