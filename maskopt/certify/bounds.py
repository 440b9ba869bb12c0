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

from ..solve.problem import LayerProblem

__all__ = ["LayerCertificate", "certify_layer", "relaxation_bound", "jacobi_shift", "rowwise_shifts"]


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


def _relaxed(problem: LayerProblem, delta: torch.Tensor, iterations: int, check_every: int,
             z0: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """FISTA on f̃_i(z) = (w_i⊙z)ᵀG(w_i⊙z) − Σ_j δ_ij z_j² + Σ_j δ_ij z_j over the relaxed polytope.

    Needs every D_wi G D_wi − diag(δ_i) ⪰ 0 (f̃ convex). Returns the best FW dual bounds
    (per row, or 1 element when unstructured), the final iterate Z and the per-row f̃(Z).
    """
    pat = problem.pattern
    W = problem.W.to(torch.float64)
    G = problem.G.to(torch.float64)
    rows, d = W.shape
    n_groups, size = pat.group_shape(rows, d)
    prune = size - problem.keep  # pruned entries per group

    def value_grad(Z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        R = W * Z
        RG = R @ G
        return (RG * R).sum(1) + (delta * Z * (1.0 - Z)).sum(1), 2.0 * W * RG + delta * (1.0 - 2.0 * Z)

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

    def hess(V: torch.Tensor) -> torch.Tensor:  # ½ ∇²f̃ applied row by row
        return W * ((W * V) @ G) - delta * V

    # step sizes: L_i = 2 λ_max(D_wi G D_wi − diag δ_i) by power iteration (×1.1), global for unstructured
    v = torch.randn(rows, d, dtype=torch.float64, device=W.device, generator=_gen(W.device, problem.seed))
    for _ in range(30):
        v = hess(v)
        v = v / v.norm(dim=1, keepdim=True).clamp_min(1e-300)
    lam = (hess(v) * v).sum(1).clamp_min(1e-300)
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
    return best, Z, value_grad(Z)[0]


def _scaled_corr(G: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """C = diag(G)^{-½} G diag(G)^{-½} over live inputs (dead ones: unit diagonal, no coupling), and live."""
    dg = G.diagonal()
    live = dg > 0
    s = torch.where(live, dg.clamp_min(1e-300).rsqrt(), torch.zeros_like(dg))
    C = G * s[:, None] * s[None, :]
    C = 0.5 * (C + C.T)
    C = C + torch.diag((~live).to(G.dtype))
    return C, live


def _barrier_lp(M: torch.Tensor, c: torch.Tensor, lo: float, s0: float, ts: Sequence[float], newton: int) -> torch.Tensor:
    """Batched: approx. argmax_s cᵀs over {M − diag s ≻ 0, s > lo} by a log-barrier Newton path."""
    s = torch.full_like(c, s0)

    def ok(x: torch.Tensor) -> torch.Tensor:
        info = torch.linalg.cholesky_ex(M - torch.diag_embed(x)).info
        return (info == 0) & (x > lo).all(-1)

    for t in ts:
        for _ in range(newton):
            A = M - torch.diag_embed(s)
            Ai = torch.cholesky_inverse(torch.linalg.cholesky(A))
            sl = 1.0 / (s - lo)
            g = t * c - Ai.diagonal(dim1=-2, dim2=-1) + sl
            H = Ai * Ai + torch.diag_embed(sl * sl)
            ds = torch.cholesky_solve(g.unsqueeze(-1), torch.linalg.cholesky(H)).squeeze(-1)
            a = torch.ones_like(s[:, :1])
            for _ in range(30):
                good = ok(s + a * ds)
                if bool(good.all()):
                    break
                a = torch.where(good[:, None], a, 0.5 * a)
            a = torch.where(ok(s + a * ds)[:, None], a, torch.zeros_like(a))
            s = s + a * ds
            if float((g * ds).sum(-1).max()) < 1e-6:
                break
    return s


def _psd_fix(M: torch.Tensor, s: torch.Tensor, safety: float = 1e-7) -> torch.Tensor:
    """Lower s (uniformly per row) so that M − diag s ⪰ 0 with a margin (checked by eigvalsh)."""
    lam = torch.linalg.eigvalsh(M - torch.diag_embed(s))
    margin = safety * (1.0 + lam[:, -1].abs())
    return s + (lam[:, 0] - margin).clamp(max=0.0)[:, None]


def rowwise_shifts(problem: LayerProblem, Z: torch.Tensor, mu: float, gammas: Sequence[float] = (0.5, 1.0),
                   chunk_elems: int = 2 ** 23) -> list[torch.Tensor]:
    """Per-row diagonal shifts δ_i = s_i ⊙ w_i² ⊙ diag(G) with D_wi G D_wi − diag δ_i ⪰ 0.

    In the unit-diagonal scaling the condition reads S_i C S_i − diag s_i ⪰ 0 (C the input
    correlation matrix, S_i = diag(sign w_i)). The bound is concave in s with supergradient
    w_ij² G_jj z_j(1 − z_j) at the relaxed minimiser z; we maximise that linearisation (at the
    current relaxed point Z) over the PSD set with a barrier path (s ≥ μ − max(μ/2, 0.02)), and return the
    candidates μ + γ(s_lp − μ), each re-made PSD with a margin by eigvalsh.
    """
    W = problem.W.to(torch.float64)
    G = problem.G.to(torch.float64)
    rows, d = W.shape
    C, live = _scaled_corr(G)
    q = W * W * G.diagonal().clamp_min(0)[None, :]
    c = q * Z * (1.0 - Z)
    c = c + 1e-3 * q.mean(1, keepdim=True) + 1e-300
    c = c / c.sum(1, keepdim=True)
    sign = torch.where(W < 0, -1.0, 1.0).to(torch.float64)
    cands: list[list[torch.Tensor]] = [[] for _ in gammas]
    lo = mu - max(0.5 * mu, 0.02)  # s ≥ lo: a bit below μ (slightly negative when μ is tiny)
    step = max(1, chunk_elems // (d * d))
    ts = (float(d), 10.0 * d)
    for r0 in range(0, rows, step):
        sg = sign[r0:r0 + step]
        M = sg[:, :, None] * C[None] * sg[:, None, :]
        if mu > 0:
            slp = _barrier_lp(M, c[r0:r0 + step], lo, 0.5 * (lo + mu), ts, newton=6)
        else:
            slp = torch.zeros_like(sg)
        for k, gam in enumerate(gammas):
            s = mu + gam * (slp - mu)
            cands[k].append(_psd_fix(M, s))
    dg = G.diagonal().clamp_min(0)[None, :]
    return [torch.cat(cs, 0) * W * W * dg * live[None, :] for cs in cands]


@torch.no_grad()
def relaxation_bound(
    problem: LayerProblem,
    *,
    iterations: int = 300,
    reformulate: bool = True,
    check_every: int = 10,
    z0: torch.Tensor | None = None,
    shift: str = "rowwise",
    rowwise_max_d: int = 512,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Root-relaxation lower bound, per row (rowwise patterns) or as a 1-element tensor (unstructured).

    Accelerated projected gradient (FISTA with restarts) on f̃ over the relaxed polytope,
    evaluating the FW dual bound every ``check_every`` iterations; returns the best bounds.
    ``shift``: "jacobi" (δ_ij = μ w_ij² G_jj, one μ for all), "rowwise" (starts from jacobi,
    then per-row optimised δ_i, see rowwise_shifts; per row the best of all candidates),
    or "none" (also when ``reformulate`` is False; a valid bound only if f is convex on Z).
    The rowwise step costs O(rows·d³) (batched Cholesky/eigvalsh); above ``rowwise_max_d``
    inputs it is skipped (jacobi bound, info["shift"] says so).
    """
    if shift not in ("rowwise", "jacobi", "none"):
        raise ValueError(f"shift must be 'rowwise', 'jacobi' or 'none', got {shift!r}")
    if not reformulate:
        shift = "none"
    if shift == "rowwise" and problem.d > rowwise_max_d:
        shift = "jacobi"
    W = problem.W.to(torch.float64)
    G = problem.G.to(torch.float64)
    mu = jacobi_shift(G) if shift != "none" else 0.0
    q = W * W * G.diagonal().clamp_min(0)[None, :]
    best, Z, fz = _relaxed(problem, mu * q, iterations, check_every, z0)
    info: dict[str, Any] = {"mu": mu, "shift": shift, "iterations": iterations,
                            "relaxed_value": float(fz.sum()), "jacobi_bound": float(best.clamp_min(0).sum())}
    if shift == "rowwise" and mu > 0:
        for delta in rowwise_shifts(problem, Z, mu):
            b, _, fz2 = _relaxed(problem, delta, iterations, check_every, Z)
            if problem.pattern.rowwise:
                best = torch.maximum(best, b)
            elif float(b.sum()) > float(best.sum()):
                best = b
            info["relaxed_value"] = max(info["relaxed_value"], float(fz2.sum()))
    return best, info


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
    shift: str = "rowwise",
) -> LayerCertificate:
    """Certified lower bound on min_M err(M) for the problem's pattern and the gap of ``mask``.

    ``rows``: rows (per-row / N:M patterns) whose bound is deepened by branch-and-bound
    (``bnb_time_limit`` seconds each, seeded with the mask's row). ``shift``: the convex
    reformulation of the root bound ("rowwise" per-row optimised diagonal shift, default;
    "jacobi" the single Jacobi shift μ; see relaxation_bound).
    """
    t0 = time.perf_counter()
    if not problem.is_feasible(mask):
        raise ValueError(f"{problem.name or 'layer'}: mask does not satisfy pattern {problem.pattern} at sparsity {problem.sparsity}")
    row_err = problem.row_errors(mask)
    error = float(row_err.sum())
    bounds, info = relaxation_bound(problem, iterations=iterations, reformulate=reformulate, shift=shift)
    bounds = bounds.cpu().clamp_min(0.0)  # err ≥ 0 always (G is a Gram matrix)
    rows_bnb: list[int] = []
    n_opt = 0
    method = "root"
    if rows is not None and len(rows):
        if not problem.pattern.rowwise:
            raise ValueError("branch-and-bound row bounds need a per-row or N:M pattern (rows are coupled when unstructured)")
        from ..solve.bnb.lmo import MaskLMO
        from ..solve.bnb.mask import solve_row
        from ..solve.bnb.tree import BnBConfig

        pat = problem.pattern
        lmo = MaskLMO.for_pattern(problem.d, pat.kind, problem.keep, pat.m, g=pat.g)
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
