"""Certified lower bounds on the best possible error of a layer, and the gap of a mask.

For a LayerProblem (W, G, pattern, sparsity) every feasible mask M has
err(M) ≥ LB, so a given mask is within gap = (err − LB) / err of the optimum.

Bound (root relaxation, batched over rows, tensor code on any device): with the pruned
indicator z = 1 − m, the error is Σ_i f_i(z_i), f_i(z) = (w_i⊙z)ᵀG(w_i⊙z). On binaries
z_j² = z_j, so with G' = G − μ·diag(G) ⪰ 0 (μ = λ_min of the unit-diagonal scaling of G)

    f̃_i(z) = (w_i⊙z)ᵀ G' (w_i⊙z) + μ Σ_j w_ij² G_jj z_j

equals f_i on masks and is convex. Over the relaxed polytope Z = {z ∈ [0,1], group sums
fixed}, any z gives the Frank-Wolfe dual bound  min_Z f̃ ≥ f̃(z) + min_{v∈vert Z} ⟨∇f̃(z), v − z⟩
(convexity of f̃ on all of R^d, so z need not even be feasible), valid per row for per-row / N:M
patterns and in total for unstructured ones. We drive z towards the relaxed optimum by
accelerated projected gradient (projection onto a capped simplex per group by safeguarded
Newton), in float32 by default, and evaluate the bound at the best iterate in float64. Tighter
shifts than μ·diag: one vector per layer optimised from the inverse-diagonal start ("opt", the default,
maskopt.certify.shift), the older barrier-LP ones per layer ("layer") or per row ("rowwise"), all over
{δ : D_w G D_w − diag δ ⪰ 0}. Deeper bounds for chosen rows come from the exact
branch-and-bound (maskopt.solve.bnb.mask.solve_rows).

Two certificates: for the mask-selection problem err(M) (kept weights unchanged), and for the refit problem
(kept weights re-solved, maskopt.certify.refit) against the error of the weights actually shipped.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from ..solve.bnb.mask import correlation_extremes, jacobi_shift, solve_rows
from ..solve.bnb.tree import BnBConfig
from ..solve.problem import LayerProblem

__all__ = ["SHIFTS", "LayerCertificate", "certify_layer", "jacobi_shift", "layer_shift", "relaxation_bound",
           "rowwise_shifts"]


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
    state: dict[str, Any] | None = field(default=None, repr=False)  # shifts, relaxed point, refit rows: to deepen it

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


def _project_capped(Y: torch.Tensor, total: float, steps: int = 40, tau: torch.Tensor | None = None,
                    ih: torch.Tensor | None = None, h: torch.Tensor | None = None,
                    rtol: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Projection of each row of Y onto {z ∈ [0,1]^n : Σ z = total} in the metric Σ_j h_j (z_j − y_j)².

    ``ih`` = 1/h (> 0, same shape as Y; ``h`` may be passed too to save a division; None: h = 1, the
    Euclidean projection). The minimiser is z_j = clip(y_j − τ·ih_j, 0, 1) with τ solving
    φ(τ) = Σ_j clip(y_j − τ ih_j, 0, 1) = total; φ is piecewise linear and non-increasing with slope
    −Σ_{j: 0 < z_j < 1} ih_j. Safeguarded Newton: Newton steps inside the bracket
    [min_j h_j(y_j − 1), max_j h_j y_j] (φ = n ≥ total at the left end, 0 at the right), bisection
    otherwise; it ends once every row is within rtol·max(total, 1) of the sum (at most ``steps``
    steps). ``tau`` warm-starts it (the previous τ). Returns (Z, τ).
    """
    if ih is None:
        lo = Y.amin(1, keepdim=True) - 1.0  # amin/amax: min(dim) also computes indices and is far slower
        hi = Y.amax(1, keepdim=True)
    else:
        h = 1.0 / ih if h is None else h
        hY = h * Y
        lo = (hY - h).amin(1, keepdim=True)
        hi = hY.amax(1, keepdim=True)
    t = 0.5 * (lo + hi) if tau is None else torch.minimum(torch.maximum(tau, lo), hi)
    tol = rtol * max(total, 1.0)
    for _ in range(steps):
        D = Y - t if ih is None else torch.addcmul(Y, t, ih, value=-1.0)
        r = D.clamp(0.0, 1.0).sum(1, keepdim=True) - total
        if float(r.abs().amax()) <= tol:
            break
        big = r > 0  # φ(τ) > total: τ too small
        lo = torch.where(big, t, lo)
        hi = torch.where(big, hi, t)
        inside = (D > 0) & (D < 1)
        slope = inside.sum(1, keepdim=True).to(Y.dtype) if ih is None else (ih * inside).sum(1, keepdim=True)
        tn = t + r / slope.clamp_min(1e-30)
        ok = (slope > 0) & (tn > lo) & (tn < hi)
        t = torch.where(r == 0, t, torch.where(ok, tn, 0.5 * (lo + hi)))
    return (Y - t if ih is None else torch.addcmul(Y, t, ih, value=-1.0)).clamp_(0.0, 1.0), t


def _vertex_min(grad_groups: torch.Tensor, prune: int) -> torch.Tensor:
    """min over vertices ⟨g, v⟩ per group: the sum of the ``prune`` smallest entries."""
    if prune <= 0:
        return grad_groups.new_zeros(grad_groups.shape[0])
    return torch.topk(grad_groups, prune, dim=1, largest=False, sorted=False).values.sum(1)


class _Reformulated:
    """f̃_i(z) = (w_i⊙z)ᵀG(w_i⊙z) − Σ_j δ_ij z_j² + Σ_j δ_ij z_j of a layer, in one dtype.

    f̃_i = f_i on binaries (z_j² = z_j) and is convex iff D_wi G D_wi − diag δ_i ⪰ 0. With
    R = W⊙Z and P = R G (the one matmul, optionally in ``matmul_dtype``): f̃ = Σ_j R⊙P + δ⊙Z⊙(1−Z)
    per row, ∇f̃ = 2 W⊙P + δ⊙(1 − 2Z). The Frank-Wolfe dual bound at any Z (valid by convexity,
    whether or not Z is feasible) is f̃(Z) + min_{v ∈ vert} ⟨∇f̃(Z), v⟩ − ⟨∇f̃(Z), Z⟩, per row for
    per-row / N:M patterns and for the whole matrix when unstructured.
    """

    def __init__(self, problem: LayerProblem, delta: torch.Tensor, dtype: torch.dtype,
                 matmul_dtype: torch.dtype | None = None):
        self.pattern = problem.pattern
        self.dtype = dtype
        self.mm = matmul_dtype or dtype
        self.W = problem.W.to(dtype)
        self.G = problem.G.to(self.mm)
        self.delta = delta.to(dtype)
        self.rows, self.d = self.W.shape
        self.size = self.pattern.group_shape(self.rows, self.d)[1]
        self.prune = self.size - problem.keep  # pruned entries per group

    def product(self, Z: torch.Tensor) -> torch.Tensor:
        return ((self.W * Z).to(self.mm) @ self.G).to(self.dtype)

    def value(self, Z: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
        dz = self.delta * Z
        return (self.W * Z * P).sum(1) + (dz - dz * Z).sum(1)

    def grad(self, Z: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
        g = torch.addcmul(self.delta, self.W, P, value=2.0)
        return g.addcmul_(self.delta, Z, value=-2.0)

    def bound(self, Z: torch.Tensor, P: torch.Tensor, fz: torch.Tensor | None = None) -> torch.Tensor:
        fz = self.value(Z, P) if fz is None else fz
        g = self.grad(Z, P)
        vmin = _vertex_min(self.pattern.to_groups(g), self.prune)
        if self.pattern.rowwise:
            return fz + vmin.reshape(self.rows, -1).sum(1) - (g * Z).sum(1)
        return (fz.sum() + vmin.sum() - (g * Z).sum()).reshape(1)


def _relaxed(problem: LayerProblem, delta: torch.Tensor, iterations: int, check_every: int,
             z0: torch.Tensor | None, *, dtype: torch.dtype = torch.float64, tol: float = 0.0,
             lam_max: float | None = None, matmul_dtype: torch.dtype | None = None,
             proj_rtol: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Preconditioned FISTA on f̃ (see _Reformulated) over the relaxed polytope; returns valid bounds, Z, f̃(Z).

    Needs every D_wi G D_wi − diag(δ_i) ⪰ 0 (f̃ convex). Metric h_ij = q_ij = w_ij² G_jj (the diagonal
    of D_wi G D_wi): in it the Hessian of row i is 2·S_i(C − diag s_i)S_i with C the input correlation
    matrix, s_ij = δ_ij / q_ij and S_i = diag(sign w_i), so one step 1/L with
    L = 2·(λ_max(C) − min s)·1.02 serves every row (``lam_max``: λ_max(C), computed when None), and
    the conditioning no longer depends on the scales of the weights or of the inputs. Entries with
    q_ij = 0 do not enter f̃ and get a tiny h. Projections in that metric (_project_capped, relative
    accuracy ``proj_rtol`` of the group sums).

    Rows are independent problems for per-row / N:M patterns, each with its own momentum and
    gradient restart (O'Donoghue–Candès: momentum is reset where ⟨Y − Z⁺, Z⁺ − Z⟩ > 0); unstructured
    problems restart as a whole. One matmul per iteration, P(Y) = P(Z⁺) + β(P(Z⁺) − P(Z)) by
    linearity, in ``matmul_dtype`` (default ``dtype``); the rest in ``dtype`` (float32 is the fast
    path). Every ``check_every`` iterations the FW bound is evaluated and the best iterate per row
    kept; the run stops early once Σ(f̃(Z) − best bound) ≤ tol·Σ f̃(Z). The returned bounds (per row,
    or 1 element when unstructured) are evaluated at the best iterates in float64 with the exact G,
    so they are valid whatever ``dtype``/``matmul_dtype`` the iterations used. Returns
    (bounds, final Z, f̃(Z) per row), float64.
    """
    pat = problem.pattern
    F = _Reformulated(problem, delta, dtype, matmul_dtype)
    rows, d, dev = F.rows, F.d, F.W.device
    W64, G64 = problem.W.to(torch.float64), problem.G.to(torch.float64)
    q = W64 * W64 * G64.diagonal().clamp_min(0)[None, :]
    live = q > 0
    s_min = float((delta.to(torch.float64) / q.clamp_min(1e-300))[live].min()) if bool(live.any()) else 0.0
    if lam_max is None:
        lam_max = correlation_extremes(G64)[1]
    L = max(2.0 * 1.02 * (lam_max - s_min), 1e-12)
    h64 = q + 1e-12 * q.mean() + 1e-300  # tiny where q = 0: a flat direction
    h, ih = h64.to(dtype), (1.0 / h64).to(dtype)
    hg, ihg = pat.to_groups(h), pat.to_groups(ih)
    a = ih / L  # the preconditioned step

    def project(Yv: torch.Tensor, tau: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        Zg, tau = _project_capped(pat.to_groups(Yv), float(F.prune), tau=tau, ih=ihg, h=hg, rtol=proj_rtol)
        return pat.from_groups(Zg, rows, d), tau

    start = torch.full((rows, d), F.prune / F.size, dtype=dtype, device=dev) if z0 is None else z0.to(dtype)
    Z, tau = project(start, None)
    P = F.product(Z)
    fz = F.value(Z, P)
    best = F.bound(Z, P, fz)
    Zbest = Z.clone()
    Y, PY = Z, P
    t = torch.ones(rows, 1, dtype=dtype, device=dev)
    for it in range(1, iterations + 1):
        Zn, tau = project(torch.addcmul(Y, a, F.grad(Y, PY), value=-1.0), tau)
        Pn = F.product(Zn)
        step = Zn - Z
        inner = ((Y - Zn) * step).sum(1, keepdim=True)
        restart = inner > 0 if pat.rowwise else (inner.sum() > 0).expand(rows, 1)
        tn = 0.5 * (1.0 + torch.sqrt(1.0 + 4.0 * t * t))
        beta = ((t - 1.0) / tn).masked_fill_(restart, 0.0)
        t = tn.masked_fill_(restart, 1.0)
        Y = torch.addcmul(Zn, beta, step)
        PY = torch.addcmul(Pn, beta, Pn - P)
        Z, P = Zn, Pn
        if it % check_every == 0 or it == iterations:
            fz = F.value(Z, P)
            b = F.bound(Z, P, fz)
            if pat.rowwise:
                up = b > best
                Zbest[up] = Z[up]
                best = torch.maximum(best, b)
            elif float(b) > float(best):
                Zbest, best = Z.clone(), b
            if tol > 0 and float(fz.sum() - best.sum()) <= tol * float(fz.sum().abs()):
                break
    F64 = _Reformulated(problem, delta, torch.float64)
    Zb = Zbest.to(torch.float64)
    Z64 = Z.to(torch.float64)
    return F64.bound(Zb, F64.product(Zb)), Z64, F64.value(Z64, F64.product(Z64))


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


def layer_shift(problem: LayerProblem, Z: torch.Tensor, mu: float, newton: int = 6) -> torch.Tensor:
    """One diagonal shift for the whole layer: δ_ij = s_j w_ij² G_jj with C − diag s ⪰ 0.

    C = diag(G)^{-½} G diag(G)^{-½}; then D_wi G D_wi − diag δ_i = D_wi diag(G)^{½}(C − diag s)
    diag(G)^{½} D_wi ⪰ 0 for every row at once (the Jacobi shift is s = μ·1). The bound is concave in
    s with supergradient c_j = Σ_i w_ij² G_jj z_ij(1 − z_ij) at the relaxed minimiser; we maximise
    cᵀs over {C − diag s ≻ 0, s ≥ μ − max(μ/2, 0.02)} at the current Z by the barrier path of
    rowwise_shifts — one d×d problem, O(d³), instead of one per row — and re-make it PSD with a
    margin by eigvalsh. Returns δ (rows × d, float64).
    """
    W = problem.W.to(torch.float64)
    G = problem.G.to(torch.float64)
    d = G.shape[0]
    C, live = _scaled_corr(G)
    q = W * W * G.diagonal().clamp_min(0)[None, :]
    if mu <= 0:
        return mu * q
    c = (q * Z * (1.0 - Z)).sum(0, keepdim=True)
    c = c + 1e-3 * c.mean() + 1e-300
    c = c / c.sum()
    lo = mu - max(0.5 * mu, 0.02)
    slp = _barrier_lp(C[None], c, lo, 0.5 * (lo + mu), (float(d), 10.0 * d), newton=newton)
    s = _psd_fix(C[None], slp)[0]
    return s[None, :] * q * live[None, :]


SHIFTS = ("opt", "jacobi", "layer", "rowwise", "none")


@torch.no_grad()
def relaxation_bound(
    problem: LayerProblem,
    *,
    iterations: int = 300,
    reformulate: bool = True,
    check_every: int = 10,
    z0: torch.Tensor | None = None,
    shift: str = "opt",
    rowwise_max_d: int = 512,
    tol: float = 3e-3,
    dtype: torch.dtype = torch.float32,
    matmul_dtype: torch.dtype | None = None,
    rounds: int = 0,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Root-relaxation lower bound, per row (rowwise patterns) or as a 1-element tensor (unstructured).

    Accelerated projected gradient (FISTA with per-row restarts, see _relaxed) on f̃ over the
    relaxed polytope, at most ``iterations`` steps in ``dtype``, stopping once the FW gap is within
    ``tol`` of the relaxed value; the bound itself is evaluated in float64, so it is valid for any
    ``dtype``/``tol``. ``shift`` (the convex reformulation):

    * "opt" (default): δ_ij = s_j w_ij² G_jj with one vector s per layer, the inverse diagonal of C
      scaled to stay feasible, improved in ``rounds`` barrier steps (maskopt.certify.shift.optimise_shift; 0 by
      default: the steps cost O(d³) each and gain little, the time budget of the certify stage spends them
      where the gap is largest); info["shift_state"] holds (shifts, assign, Z) for deeper refinement and the
      refit bound;
    * "jacobi": δ_ij = μ w_ij² G_jj with one μ = λ_min(C) (jacobi_shift) — one eigvalsh
      per G and one relaxation;
    * "layer": starts from jacobi, then one shift vector optimised for the layer (layer_shift,
      one O(d³) barrier solve and a second relaxation); per row the better bound;
    * "rowwise": starts from jacobi, then per-row optimised δ_i (rowwise_shifts, O(rows·d³),
      the tightest and by far the slowest); per row the best of all candidates; above
      ``rowwise_max_d`` inputs it falls back to "layer" (info["shift"] says so);
    * "none" (also when ``reformulate`` is False): no shift, a valid bound only if f is convex on Z.
    """
    if shift not in SHIFTS:
        raise ValueError(f"shift must be one of {', '.join(map(repr, SHIFTS))}, got {shift!r}")
    if not reformulate:
        shift = "none"
    if shift == "rowwise" and problem.d > rowwise_max_d:
        shift = "layer"
    W = problem.W.to(torch.float64)
    G = problem.G.to(torch.float64)
    lam_min, lam_max = correlation_extremes(G)  # one eigvalsh: the shift and the step size
    mu = jacobi_shift(G, lam_min=lam_min) if shift != "none" else 0.0
    q = W * W * G.diagonal().clamp_min(0)[None, :]
    run = dict(dtype=dtype, tol=tol, lam_max=lam_max, matmul_dtype=matmul_dtype)
    if shift == "opt":
        from .shift import optimise_shift  # noqa: PLC0415

        best, S, assign, Z, sinfo = optimise_shift(problem, rounds=rounds, iterations=iterations, check_every=check_every,
                                                    z0=z0, **run)
        info = {"mu": mu, "lambda_max": lam_max, "shift": shift, "iterations": iterations,
                "dtype": str(dtype).replace("torch.", ""), **sinfo, "shift_state": (S, assign, Z)}
        return best, info
    best, Z, fz = _relaxed(problem, mu * q, iterations, check_every, z0, **run)
    info: dict[str, Any] = {"mu": mu, "lambda_max": lam_max, "shift": shift, "iterations": iterations,
                            "dtype": str(dtype).replace("torch.", ""), "relaxed_value": float(fz.sum()),
                            "jacobi_bound": float(best.clamp_min(0).sum())}
    if shift in ("layer", "rowwise") and mu > 0:
        deltas = [layer_shift(problem, Z, mu)] if shift == "layer" else rowwise_shifts(problem, Z, mu)
        for delta in deltas:
            b, _, fz2 = _relaxed(problem, delta, iterations, check_every, Z, **run)
            if problem.pattern.rowwise:
                best = torch.maximum(best, b)
            elif float(b.sum()) > float(best.sum()):
                best = b
            info["relaxed_value"] = max(info["relaxed_value"], float(fz2.sum()))
    return best, info


def certify_layer(
    problem: LayerProblem,
    mask: torch.Tensor,
    *,
    iterations: int = 300,
    rows: Sequence[int] | None = None,
    bnb_time_limit: float = 1.0,
    bnb_node_limit: int = 100_000,
    reformulate: bool = True,
    shift: str = "opt",
    tol: float = 3e-3,
    dtype: torch.dtype = torch.float32,
    weight: torch.Tensor | None = None,
    refit: bool = True,
    refit_iterations: int = 150,
) -> LayerCertificate:
    """Certified lower bound on min_M err(M) for the problem's pattern and the gap of ``mask``.

    ``rows``: rows (per-row / N:M patterns) whose bound is deepened by branch-and-bound
    (``bnb_time_limit`` seconds each, seeded with the mask's row). ``shift``, ``iterations``,
    ``tol``, ``dtype``: the root bound (see relaxation_bound; "opt" by default).
    ``refit``: also bound the refit problem (maskopt.certify.refit, ``refit_iterations`` FISTA steps) and
    compare it with the error of ``weight`` (the shipped weights, rows × d, zero where pruned; default
    W ⊙ mask): info["shipped_error"], info["refit_lower_bound"], info["refit_gap"]. The refit bound is also a
    bound on the mask problem (a refit never costs more), so the mask bound is per row the better of both.
    """
    t0 = time.perf_counter()
    if not problem.is_feasible(mask):
        raise ValueError(f"{problem.name or 'layer'}: mask does not satisfy pattern {problem.pattern} at sparsity {problem.sparsity}")
    row_err = problem.row_errors(mask)
    error = float(row_err.sum())
    z0 = (~mask.bool()).to(torch.float32)  # the relaxation starts at the mask (its pruned indicator): fewer iterations
    bounds, info = relaxation_bound(problem, iterations=iterations, reformulate=reformulate, shift=shift, tol=tol,
                                    dtype=dtype, z0=z0)
    state = info.pop("shift_state", None)
    bounds = bounds.cpu().clamp_min(0.0)  # err ≥ 0 always (G is a Gram matrix)
    keep_state = {"shift": state, "mask_rows": bounds.clone()} if state is not None else None
    if refit:
        from .refit import refit_certificate  # noqa: PLC0415

        rb, rinfo = refit_certificate(problem, mask, weight, state, iterations=refit_iterations, dtype=dtype)
        info.update(rinfo)
        rb = rb.cpu().clamp_min(0.0)
        if keep_state is not None:
            keep_state["refit_rows"] = rb.clone()
        bounds = torch.maximum(bounds, rb) if problem.pattern.rowwise else torch.maximum(bounds.sum(), rb.sum()).reshape(1)
    rows_bnb: list[int] = []
    n_opt = 0
    method = "root"
    if rows is not None and len(rows):
        if not problem.pattern.rowwise:
            raise ValueError("branch-and-bound row bounds need a per-row or N:M pattern (rows are coupled when unstructured)")
        cfg = BnBConfig(time_limit=bnb_time_limit, node_limit=bnb_node_limit)
        res = solve_rows(problem, sorted(set(int(r) for r in rows)), seed_mask=mask, config=cfg, mu=info["mu"])
        bounds[res.rows] = torch.maximum(bounds[res.rows], res.lower_bounds)
        rows_bnb = res.rows
        n_opt = res.n_optimal
        improved = int((res.errors < row_err.cpu()[res.rows] * (1 - 1e-9)).sum())
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
        state=keep_state,
    )
