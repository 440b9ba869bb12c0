"""A certified lower bound for the refit problem: the mask chosen and the kept weights re-solved.

Row i with the kept set K (the pattern's counts) and any weights v supported on K costs
E(v) = (w − v)ᵀG(w − v); the best a mask can do is min_K min_v E. With a diagonal Δ = diag(δ),
δ = s ⊙ diag(G) and A = G − Δ ⪰ 0 (the same certified shift s as the mask bound), for any u the tangent
rᵀAr ≥ 2uᵀAr − uᵀAu of r = w − v gives, with g = Au,

    E ≥ −uᵀAu − Σ_j g_j²/δ_j + Σ_{j pruned} e_j,    e_j = (δ_j w_j + g_j)²/δ_j,

(kept r_j minimised in closed form, pruned r_j = w_j), so LB(u) = −uᵀAu − Σ g²/δ + (the pruned-count smallest
e_j per group) is a valid bound for every u: the Lagrangian dual of the perspective relaxation
min_v ‖w − v‖²_G + Σ_j δ_j v_j² (1/m_j − 1) over the relaxed kept indicators m. We minimise that relaxation
(in a_j = √δ_j v_j it is ‖w − v‖²_A − 2⟨w, v⟩_Δ + ‖w‖²_Δ + ‖a‖²_(k), the last term the squared k-support norm)
by FISTA with the k-support prox, and evaluate LB at u = w − v in float64: valid whatever the iterations did.
Inputs with G_jj = 0 cost nothing either way and are left out.
"""
from __future__ import annotations

from typing import Any

import torch

from ..solve.problem import LayerProblem

__all__ = ["refit_bound", "refit_lower_bound_at", "ksupport_prox"]


def ksupport_prox(B: torch.Tensor, keep: float, lam: float, tau: torch.Tensor | None = None, steps: int = 40,
                  rtol: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-wise argmin_a ½‖a − b‖² + lam·‖a‖²_(k), ‖a‖²_(k) = min_{0 ≤ m ≤ 1, Σm = k} Σ a_j²/m_j; returns (a, τ).

    For fixed m, a_j = b_j m_j/(m_j + 2·lam); the best m is m_j = clip(|b_j|τ − 2·lam, 0, 1) with τ ≥ 0 such that
    Σ m_j = k: φ(τ) = Σ_j clip(|b_j|τ − 2·lam, 0, 1) is piecewise linear and non-decreasing, solved by safeguarded
    Newton (``tau`` warm-starts it); rows with at most k non-zeros take m = 1 on them.
    """
    absb = B.abs()
    c = 2.0 * lam
    k = float(keep)
    nz = absb > 0
    small = torch.where(nz, absb, torch.full_like(absb, float("inf"))).amin(1, keepdim=True)
    hi = torch.where(torch.isfinite(small), (1.0 + c) / small.clamp_min(1e-300), torch.ones_like(small))  # φ(hi) = #nz
    lo = torch.zeros_like(hi)
    enough = nz.sum(1, keepdim=True) > k
    t = 0.5 * (lo + hi) if tau is None else torch.minimum(torch.maximum(tau, lo), hi)
    tol = rtol * max(k, 1.0)
    for _ in range(steps):
        D = absb * t - c
        r = D.clamp(0.0, 1.0).sum(1, keepdim=True) - k
        if float(torch.where(enough, r.abs(), torch.zeros_like(r)).amax()) <= tol:
            break
        big = r > 0
        hi = torch.where(big, t, hi)
        lo = torch.where(big, lo, t)
        slope = (absb * ((D > 0) & (D < 1))).sum(1, keepdim=True)
        tn = t - r / slope.clamp_min(1e-300)
        ok = (slope > 0) & (tn > lo) & (tn < hi)
        t = torch.where(r == 0, t, torch.where(ok, tn, 0.5 * (lo + hi)))
    t = torch.where(enough, t, hi)
    M = (absb * t - c).clamp(0.0, 1.0)
    return B * M / (M + c), t


class _RefitRows:
    """The refit bound's data for a layer in one dtype: W, G, δ (rows × d: one shift per row allowed) and the groups.

    A_i = G − diag(δ_i), so A_i u_i = (uᵢᵀG) − δ_i ⊙ u_i costs one shared matmul for all rows.
    """

    def __init__(self, problem: LayerProblem, shift: torch.Tensor, dtype: torch.dtype):
        self.pattern = problem.pattern
        self.W = problem.W.to(dtype)
        self.G = problem.G.to(dtype)
        gd = self.G.diagonal().clamp_min(0)
        self.live = (gd > 0)[None, :]
        S = shift.to(dtype).reshape(-1, shift.shape[-1]).expand(self.W.shape[0], -1)
        self.delta = (S * gd[None, :] * self.live).clamp_min(0)
        self.ok = self.live & (self.delta > 0)  # inputs the bound can price; others need g_j = 0
        self.rows, self.d = self.W.shape
        self.keep = problem.keep
        self.prune = self.pattern.group_shape(self.rows, self.d)[1] - problem.keep

    def Au(self, U: torch.Tensor) -> torch.Tensor:
        return U @ self.G - self.delta * U

    def lower_bound(self, U: torch.Tensor) -> torch.Tensor:
        """LB(u) per row (rowwise patterns) or in total (1 element); −inf where an unpriced input has g_j ≠ 0."""
        Gu = self.Au(U)
        quad = (U * Gu).sum(1)
        dl = torch.where(self.ok, self.delta, torch.ones_like(self.delta))
        zero = torch.zeros_like(Gu)
        kept_part = torch.where(self.ok, Gu * Gu / dl, zero).sum(1)
        e = torch.where(self.ok, (self.delta * self.W + Gu) ** 2 / dl, zero)
        bad = (~self.ok & self.live & (Gu != 0)).any(1)
        eg = self.pattern.to_groups(e)
        low = torch.topk(eg, self.prune, dim=1, largest=False, sorted=False).values.sum(1) if self.prune > 0 else eg.new_zeros(eg.shape[0])
        if self.pattern.rowwise:
            out = -quad - kept_part + low.reshape(self.rows, -1).sum(1)
            return torch.where(bad, torch.full_like(out, -float("inf")), out)
        tot = -quad.sum() - kept_part.sum() + low.sum()
        return (tot if not bool(bad.any()) else tot.new_tensor(-float("inf"))).reshape(1)


def refit_lower_bound_at(problem: LayerProblem, shift: torch.Tensor, U: torch.Tensor) -> torch.Tensor:
    """LB(u) of the module docstring at the residuals U (rows × d), in float64: valid for any U."""
    return _RefitRows(problem, shift, torch.float64).lower_bound(U.to(torch.float64))


@torch.no_grad()
def refit_bound(
    problem: LayerProblem,
    s: torch.Tensor,
    *,
    V0: torch.Tensor | None = None,
    iterations: int = 200,
    check_every: int = 20,
    tol: float = 3e-3,
    dtype: torch.dtype = torch.float32,
    lam_max: float | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Certified lower bound on min over masks of the refit error (per row, or 1 element when unstructured).

    ``s``: a certified shift (C − diag(s) ⪰ 0, C the input correlation; see shift.py), one vector or one per row
    (rows × d). ``V0``: kept weights to
    start from (e.g. the shipped weights); by default w. FISTA on the perspective relaxation in a = √δ ⊙ v with
    step 1/L, L = 2·λ_max(Δ^{-½}AΔ^{-½}) (computed when ``lam_max`` is None, from C and s), gradient restarts, and
    the bound LB(w − v) evaluated every ``check_every`` iterations in ``dtype`` to keep the best iterate per row, and
    in float64 at those iterates at the end (the certified values);
    stops once the relaxed value and the best bound agree within ``tol``.
    """
    R = _RefitRows(problem, s, dtype)
    R64 = _RefitRows(problem, s, torch.float64)
    W = R.W
    ok = R.ok
    sq = torch.where(ok, R.delta.sqrt(), torch.ones_like(R.delta))
    if lam_max is None:  # λ_max(Δ_i^{-½} A_i Δ_i^{-½}) = λ_max(diag(s_i)^{-½} C diag(s_i)^{-½}) − 1, the largest over the shifts
        from .bounds import _scaled_corr  # noqa: PLC0415

        C, _ = _scaled_corr(R64.G)
        S = s.to(torch.float64).reshape(-1, s.shape[-1])
        lam_max = 0.0
        for srow in torch.unique(S, dim=0):
            isq = torch.where(srow > 0, srow.clamp_min(1e-300).rsqrt(), torch.zeros_like(srow))
            M = isq[:, None] * C * isq[None, :]
            lam_max = max(lam_max, float(torch.linalg.eigvalsh(0.5 * (M + M.T))[-1]) - 1.0)
    L = max(2.0 * 1.02 * lam_max, 1e-12)
    lam = 1.0 / L
    keep = problem.keep
    pat = problem.pattern

    def value_grad(Aa: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Smooth part S(a) = (w − v)ᵀA(w − v) − 2⟨w, v⟩_Δ per row and its gradient in a (v = a/√δ)."""
        V = Aa / sq
        Rr = torch.where(ok, W - V, W)  # unpriced inputs keep r = w (pruned or not, they are not in the bound)
        P = R.Au(Rr)
        val = (Rr * P).sum(1) - 2.0 * (R.delta * W * V).sum(1)
        grad = (-2.0 * P - 2.0 * R.delta * W) / sq
        return val, torch.where(ok, grad, torch.zeros_like(grad))

    tau = None

    def prox(B: torch.Tensor) -> torch.Tensor:
        nonlocal tau
        Bg = pat.to_groups(torch.where(ok, B, torch.zeros_like(B)))
        Ag, tau = ksupport_prox(Bg, keep, lam, tau)
        return pat.from_groups(Ag, *B.shape)

    V0 = problem.W if V0 is None else V0
    a = torch.where(ok, V0.to(dtype) * sq, torch.zeros_like(W))
    y = a
    t = torch.ones(W.shape[0], 1, dtype=dtype, device=W.device)
    best = R.lower_bound(torch.where(ok, W - a / sq, W))  # iterates are ranked in ``dtype``; the bound is float64
    a_best = a.clone()
    it = 0
    for it in range(1, iterations + 1):
        _, gy = value_grad(y)
        an = prox(y - lam * gy)
        step = an - a
        inner = ((y - an) * step).sum(1, keepdim=True)
        restart = inner > 0 if pat.rowwise else (inner.sum() > 0).expand_as(inner)
        tn = 0.5 * (1.0 + torch.sqrt(1.0 + 4.0 * t * t))
        beta = ((t - 1.0) / tn).masked_fill_(restart, 0.0)
        t = tn.masked_fill_(restart, 1.0)
        y = an + beta * step
        a = an
        if it % check_every == 0 or it == iterations:
            b = R.lower_bound(torch.where(ok, W - a / sq, W))
            if pat.rowwise:
                up = b > best
                a_best[up] = a[up]
                best = torch.maximum(best, b)
            elif float(b) > float(best):
                best, a_best = b, a.clone()
            if tol > 0:
                val, _ = value_grad(a)
                Aa = pat.to_groups(a * a)
                ks = _ksupport_sq(Aa, keep).reshape(W.shape[0], -1).sum(1) if pat.rowwise else _ksupport_sq(Aa, keep).sum()
                relaxed = float((val.sum() + (R.delta * W * W).sum()) + ks.sum())
                if relaxed - float(best.clamp_min(0).sum()) <= tol * abs(relaxed):
                    break
    # the certified values: LB at the best iterates, in float64 with the exact G
    best = R64.lower_bound(torch.where(ok, R64.W - a_best.to(torch.float64) / sq.to(torch.float64), R64.W))
    return best, {"refit_iterations": it, "refit_lam_max": lam_max}


def _ksupport_sq(A2: torch.Tensor, keep: int) -> torch.Tensor:
    """‖a‖²_(k) per row from a² (rows × n): min over r < k of Σ_{j<r} a↓_j² + (Σ_{j≥r} a↓_j)²/(k − r), over the r
    whose split is feasible (a↓_r ≤ the pooled level Σ_{j≥r} a↓_j/(k − r), i.e. m ≤ 1)."""
    a = A2.clamp_min(0).sqrt()
    srt = torch.sort(a, dim=1, descending=True).values
    k = min(int(keep), srt.shape[1])
    if k <= 0:
        return torch.where((srt > 0).any(1), torch.full_like(srt[:, 0], float("inf")), srt[:, 0] * 0)
    tail = torch.flip(torch.cumsum(torch.flip(srt, [1]), 1), [1])[:, :k]  # Σ_{j ≥ r} a↓_j, r < k
    head = torch.cumsum(srt * srt, 1)[:, :k] - srt[:, :k] ** 2  # Σ_{j < r} a↓_j²
    slots = torch.arange(k, 0, -1, dtype=a.dtype, device=a.device)[None, :]  # k − r
    val = head + tail * tail / slots
    feasible = srt[:, :k] * slots <= tail * (1 + 1e-12) + 1e-300
    return torch.where(feasible, val, torch.full_like(val, float("inf"))).amin(1)


@torch.no_grad()
def refit_certificate(problem: LayerProblem, mask: torch.Tensor, weight: torch.Tensor | None = None,
                      state: tuple | None = None, *, iterations: int = 150, dtype: torch.dtype = torch.float32,
                      tol: float = 3e-3) -> tuple[torch.Tensor, dict[str, Any]]:
    """The refit bound of a layer and the error of its shipped weights: (bounds, info).

    ``weight``: the shipped weights (rows × d; default W ⊙ mask); ``state``: (shifts, assign, Z) of the mask bound
    (maskopt.certify.shift), whose shifts are reused (a group whose shift is not positive on every live input
    falls back to the inverse-diagonal shift, which is). info: shipped_error = Σ_i (w_i − ŵ_i)ᵀG(w_i − ŵ_i),
    refit_lower_bound, refit_gap = (shipped − bound)/shipped, refit_iterations.
    """
    from .bounds import _scaled_corr  # noqa: PLC0415
    from .shift import inverse_diagonal_shift  # noqa: PLC0415

    G64 = problem.G.to(torch.float64)
    W64 = problem.W.to(torch.float64)
    live = G64.diagonal() > 0
    Wh = (W64 * mask.to(torch.float64)) if weight is None else weight.to(torch.float64)
    Rr = W64 - Wh
    shipped = float(((Rr @ G64) * Rr).sum())
    fallback = None
    if state is not None:
        S, assign = state[0].to(torch.float64), state[1]
        bad = (S[:, live] <= 0).any(1)
        if bool(bad.any()):
            fallback = inverse_diagonal_shift(_scaled_corr(G64)[0])
            S = torch.where(bad[:, None], fallback[None, :], S)
        shift = S[assign] if S.shape[0] > 1 else S[0]
    else:
        shift = inverse_diagonal_shift(_scaled_corr(G64)[0])
    b, info = refit_bound(problem, shift, V0=Wh, iterations=iterations, dtype=dtype, tol=tol)
    b = b.clamp_min(0.0)
    lower = min(float(b.sum()), shipped)
    info.update(shipped_error=shipped, refit_lower_bound=lower,
                refit_gap=max((shipped - lower) / shipped, 0.0) if shipped > 0 else 0.0,
                refit_shift_fallback=fallback is not None)
    return b, info
