"""Certified lower bounds on the best possible error of a layer, and the gap of a mask.

For a LayerProblem (W, G, pattern, sparsity) every feasible mask M has
err(M) ≥ LB, so a given mask is within gap = (err − LB) / err of the optimum.

Bound (root relaxation, batched over rows, tensor code on any device): with the pruned
indicator z = 1 − m, the error is Σ_i f_i(z_i), f_i(z) = (w_i⊙z)ᵀG(w_i⊙z). On binaries
z_j² = z_j, so with G' = G − μ·diag(G) ⪰ 0 (μ = λ_min of the unit-diagonal scaling of G)

    f̃_i(z) = (w_i⊙z)ᵀ G' (w_i⊙z) + μ Σ_j w_ij² G_jj z_j

equals f_i on masks and is convex. Over the relaxed polytope Z = {z ∈ [0,1], group sums
fixed}, any feasible z gives the Frank-Wolfe dual bound  min_Z f̃ ≥ f̃(z) + min_{v∈vert Z} ⟨∇f̃(z), v − z⟩,
valid per row for per-row / N:M patterns and in total for unstructured ones. We drive z
towards the relaxed optimum by accelerated projected gradient (projection onto a capped
simplex per group by bisection) and keep the best bound seen. Deeper bounds for chosen rows
come from the exact branch-and-bound (maskopt.bnb.mask.solve_row).

The certificate is for the mask-selection problem err(M) (kept weights unchanged).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from .problem import LayerProblem

__all__ = ["LayerCertificate", "certify_layer", "relaxation_bound", "jacobi_shift"]


@dataclass
class LayerCertificate:
    error: float  # err(mask) = Σ_i r_iᵀ G r_i (mask only)
    lower_bound: float  # every feasible mask of the pattern has err ≥ lower_bound
    gap: float  # (error − lower_bound) / error, 0 when error = 0
    method: str  # "root" or "root+bnb"
    row_errors: torch.Tensor | None = None  # per row (rowwise patterns)
    row_bounds: torch.Tensor | None = None  # per-row certified bounds (rowwise patterns)
    rows_bnb: list[int] = field(default_factory=list)  # rows given a branch-and-bound bound
    rows_optimal: int = 0  # of those, rows whose optimum was proven
    time: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "error": self.error,
            "lower_bound": self.lower_bound,
            "gap": self.gap,
            "method": self.method,
            "rows_bnb": len(self.rows_bnb),
            "rows_optimal": self.rows_optimal,
            "time": self.time,
            **{k: v for k, v in self.info.items() if isinstance(v, (int, float, str, bool))},
        }


def jacobi_shift(G: torch.Tensor, safety: float = 1e-7) -> float:
    """μ ≥ 0 with G − μ·diag(G) ⪰ 0: λ_min(diag(G)^{-½} G diag(G)^{-½}) over the live inputs."""
    G = G.to(torch.float64)
    dg = G.diagonal()
    live = dg > 0
    if not bool(live.any()):
        return 0.0
    s = dg[live].rsqrt()
    C = G[live][:, live] * s[:, None] * s[None, :]
    lam = float(torch.linalg.eigvalsh(0.5 * (C + C.T))[0])
    return max(0.0, lam * (1.0 - safety) - safety)


def _project_capped(Y: torch.Tensor, total: float, steps: int = 40) -> torch.Tensor:
    """Euclidean projection of each row of Y onto {z ∈ [0,1]^n : Σ z = total}: z = clip(y − τ, 0, 1)."""
    lo = Y.min(1, keepdim=True).values - 1.0
    hi = Y.max(1, keepdim=True).values
    for _ in range(steps):
        tau = 0.5 * (lo + hi)
        s = (Y - tau).clamp(0.0, 1.0).sum(1, keepdim=True)
        big = s > total
        lo = torch.where(big, tau, lo)
        hi = torch.where(big, hi, tau)
    return (Y - 0.5 * (lo + hi)).clamp(0.0, 1.0)


def _vertex_min(grad_groups: torch.Tensor, prune: int) -> torch.Tensor:
    """min over vertices ⟨g, v⟩ per group: the sum of the ``prune`` smallest entries."""
    if prune <= 0:
        return grad_groups.new_zeros(grad_groups.shape[0])
    return torch.topk(grad_groups, prune, dim=1, largest=False).values.sum(1)


@torch.no_grad()
def relaxation_bound(
    problem: LayerProblem,
    *,
    iterations: int = 300,
    reformulate: bool = True,
    check_every: int = 10,
    z0: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Root-relaxation lower bound, per row (rowwise patterns) or as a 1-element tensor (unstructured).

    Accelerated projected gradient (FISTA with restarts) on f̃ over the relaxed polytope,
    evaluating the FW dual bound every ``check_every`` iterations; returns the best bounds.
    """
    pat = problem.pattern
    W = problem.W.to(torch.float64)
    G = problem.G.to(torch.float64)
    rows, d = W.shape
    mu = jacobi_shift(G) if reformulate else 0.0
    dg = G.diagonal()
    Gs = G - mu * torch.diag(dg)
    S = mu * W * W * dg[None, :]  # linear term of f̃ in z
    n_groups, size = pat.group_shape(rows, d)
    prune = size - problem.keep  # pruned entries per group

    def value_grad(Z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        R = W * Z
        RG = R @ Gs
        return (RG * R).sum(1) + (S * Z).sum(1), 2.0 * W * RG + S

    def bound(Z: torch.Tensor) -> torch.Tensor:
        fz, g = value_grad(Z)
        vmin = _vertex_min(pat.to_groups(g), prune)
        lin = vmin.reshape(rows, -1).sum(1) if pat.rowwise else vmin
        inner = (g * Z).sum(1)
        if pat.rowwise:
            return fz + lin - inner
        return (fz.sum() + lin.sum() - inner.sum()).reshape(1)

    def project(Y: torch.Tensor) -> torch.Tensor:
        return pat.from_groups(_project_capped(pat.to_groups(Y), float(prune)), rows, d)

    # step sizes: L_i = 2 λ_max(D_wi G' D_wi) by power iteration (×1.1), global for unstructured
    v = torch.randn(rows, d, dtype=torch.float64, device=W.device, generator=_gen(W.device, problem.seed))
    for _ in range(30):
        v = W * ((W * v) @ Gs)
        v = v / v.norm(dim=1, keepdim=True).clamp_min(1e-300)
    lam = ((W * v) @ Gs * (W * v)).sum(1).clamp_min(1e-300)
    L = 2.2 * lam
    if not pat.rowwise:
        L = L.max().expand(rows)
    step = (1.0 / L)[:, None]

    Z = project(torch.full((rows, d), prune / size, dtype=torch.float64, device=W.device)) if z0 is None else project(z0.to(torch.float64))
    best = bound(Z)
    Y, t = Z.clone(), 1.0
    fz_prev = value_grad(Z)[0].sum()
    for it in range(1, iterations + 1):
        _, gy = value_grad(Y)
        Zn = project(Y - step * gy)
        fz = value_grad(Zn)[0].sum()
        if fz > fz_prev:  # adaptive restart keeps FISTA monotone-ish
            t = 1.0
            Y = Z.clone()
            continue
        tn = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * t * t))
        Y = Zn + ((t - 1.0) / tn) * (Zn - Z)
        Z, t, fz_prev = Zn, tn, fz
        if it % check_every == 0 or it == iterations:
            best = torch.maximum(best, bound(Z))
    best = torch.maximum(best, bound(Z))
    return best, {"mu": mu, "relaxed_value": float(value_grad(Z)[0].sum()), "iterations": iterations}


def _gen(device: torch.device, seed: int) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


def certify_layer(
    problem: LayerProblem,
    mask: torch.Tensor,
    *,
    iterations: int = 300,
    rows: Sequence[int] | None = None,
    bnb_time_limit: float = 1.0,
    bnb_node_limit: int = 100_000,
    reformulate: bool = True,
) -> LayerCertificate:
    """Certified lower bound on min_M err(M) for the problem's pattern and the gap of ``mask``.

    ``rows``: rows (per-row / N:M patterns) whose bound is deepened by branch-and-bound
    (``bnb_time_limit`` seconds each, seeded with the mask's row).
    """
    t0 = time.perf_counter()
    if not problem.is_feasible(mask):
        raise ValueError(f"{problem.name or 'layer'}: mask does not satisfy pattern {problem.pattern} at sparsity {problem.sparsity}")
    row_err = problem.row_errors(mask)
    error = float(row_err.sum())
    bounds, info = relaxation_bound(problem, iterations=iterations, reformulate=reformulate)
    bounds = bounds.cpu().clamp_min(0.0)  # err ≥ 0 always (G is a Gram matrix)
    rows_bnb: list[int] = []
    n_opt = 0
    method = "root"
    if rows is not None and len(rows):
        if not problem.pattern.rowwise:
            raise ValueError("branch-and-bound row bounds need a per-row or N:M pattern (rows are coupled when unstructured)")
        from .bnb.lmo import MaskLMO
        from .bnb.mask import solve_row
        from .bnb.tree import BnBConfig

        pat = problem.pattern
        lmo = MaskLMO.for_pattern(problem.d, pat.kind, problem.keep, pat.m)
        Wn = problem.W.detach().to(torch.float64).cpu().numpy()
        Gn = problem.G.detach().to(torch.float64).cpu().numpy()
        Mn = mask.detach().cpu().numpy().astype(float)
        mu = info["mu"]
        cfg = BnBConfig(time_limit=bnb_time_limit, node_limit=bnb_node_limit)
        improved = 0
        for i in sorted(set(int(r) for r in rows)):
            res = solve_row(Wn[i], Gn, lmo, config=cfg, seeds=[Mn[i]], mu=mu)
            bounds[i] = max(float(bounds[i]), res.lower_bound)
            rows_bnb.append(i)
            n_opt += res.status == "optimal"
            improved += res.error < float(row_err[i]) * (1 - 1e-9)
        info["rows_improvable"] = improved
        method = "root+bnb"
    if problem.pattern.rowwise:
        bounds = torch.minimum(bounds, row_err.cpu())  # a bound above a feasible value is rounding noise
        lower = float(bounds.sum())
    else:
        lower = min(float(bounds.sum()), error)
    gap = (error - lower) / error if error > 0 else 0.0
    return LayerCertificate(
        error=error,
        lower_bound=lower,
        gap=max(gap, 0.0),
        method=method,
        row_errors=row_err.cpu() if problem.pattern.rowwise else None,
        row_bounds=bounds if problem.pattern.rowwise else None,
        rows_bnb=rows_bnb,
        rows_optimal=n_opt,
        time=time.perf_counter() - t0,
        info=info,
    )
