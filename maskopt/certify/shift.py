"""An optimised diagonal shift for the root bound, one vector per layer (every row shares G).

Row i's error on masks, f_i(z) = (w_i⊙z)ᵀG(w_i⊙z) (z = pruned indicator), equals
f̃_i(z) = f_i(z) − Σ_j s_j q_ij (z_j² − z_j) with q_ij = w_ij² G_jj, and f̃_i is convex for every row at
once iff C − diag(s) ⪰ 0 (C = diag(G)^{-½} G diag(G)^{-½}, the input correlation). The bound
Φ(s) = Σ_i min_{z ∈ relaxed} f̃_i(z) is concave in s with supergradient c_j = Σ_i q_ij z_ij(1 − z_ij) at the
relaxed minimisers; it is maximised over F = {s : C − diag(s) ⪰ 0} (the Jacobi shift is s = λ_min(C)·1):

* start: s_j = γ/(C⁻¹)_jj, the share of input j's variance the other inputs do not explain, scaled by the
  largest γ that keeps C − diag(s) ⪰ 0 (inputs that are nearly combinations of others get a small shift);
* centre: the barrier centre for the static weights c_j = Σ_i q_ij (where the layer's error mass sits; no
  relaxation needed), argmax cᵀs + t·logdet(C − diag s) + t·Σ log(s − lo) with a small t (Newton from the start);
* rounds: relax (warm-started FISTA, bounds kept per row), then a damped step towards the barrier centre
  argmax_s cᵀs + t·logdet(C − diag s) + t·Σ log(s − lo) (Newton, t shrinking), the step length chosen on the
  Frank-Wolfe bound at the current relaxed point.

Every s that yields a bound is certified (C − diag(s) ⪰ 0 checked by a float64 Cholesky factorisation with a
margin), and every bound is the float64 Frank-Wolfe dual bound of _relaxed, so it is valid whatever the
iterations did. The bound is per row the best over the rounds.
"""
from __future__ import annotations

from typing import Any

import torch

from ..solve.problem import LayerProblem

__all__ = ["certified_shift", "inverse_diagonal_shift", "optimise_shift", "shift_center"]


def _chol_ok(M: torch.Tensor) -> bool:
    return bool(torch.linalg.cholesky_ex(M).info == 0)


def certified_shift(C: torch.Tensor, s: torch.Tensor, margin: float = 1e-9) -> torch.Tensor:
    """s lowered (uniformly) until C − diag(s) ⪰ margin·(1 + max|s|)·I, checked by a float64 Cholesky factorisation."""
    C64, s64 = C.to(torch.float64), s.to(torch.float64)
    eye = torch.eye(len(s64), dtype=torch.float64, device=C.device)
    m = margin * (1.0 + float(s64.abs().max()) + float(C64.diagonal().max()))
    out = s64 - m
    for _ in range(4):
        if _chol_ok(C64 - torch.diag(out) - m * eye):
            return out
        lam = float(torch.linalg.eigvalsh(C64 - torch.diag(out))[0])
        out = out + min(lam, m) - 2.0 * m  # λ_min(C − diag(out)) becomes ≈ 2m (or more)
        if _chol_ok(C64 - torch.diag(out) - m * eye):
            return out
        m *= 10.0
    raise FloatingPointError("certified_shift: could not make C − diag(s) positive semidefinite")


def inverse_diagonal_shift(C: torch.Tensor) -> torch.Tensor:
    """s_j = γ/(C⁻¹)_jj with the largest γ such that C − diag(s) ⪰ 0 (certified).

    1/(C⁻¹)_jj = 1 − R_j², the variance of input j left after regressing it on all the others: the largest shift
    input j could take alone. When C is singular to working precision, C + ρI (ρ as small as the factorisation
    allows) gives the direction; γ always comes from C itself.
    """
    C64 = C.to(torch.float64)
    d = C64.shape[0]
    eye = torch.eye(d, dtype=torch.float64, device=C.device)
    rho = 0.0
    scale = float(C64.diagonal().mean())
    for _ in range(8):
        L, info = torch.linalg.cholesky_ex(C64 + rho * eye)
        if int(info) == 0:
            break
        rho = 1e-14 * scale if rho == 0 else 100.0 * rho
    else:
        return certified_shift(C64, torch.zeros(d, dtype=torch.float64, device=C.device))
    D = 1.0 / torch.cholesky_inverse(L).diagonal().clamp_min(1e-300)
    r = D.rsqrt()
    gam = float(torch.linalg.eigvalsh(r[:, None] * C64 * r[None, :])[0])
    return certified_shift(C64, max(gam, 0.0) * D)


def shift_center(C: torch.Tensor, c: torch.Tensor, t: float, s: torch.Tensor, lo: float, steps: int = 8,
                 dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Damped Newton steps on ψ(s) = cᵀs + t·logdet(C − diag s) + t·Σ log(s − lo) from a strictly feasible s.

    ∇ψ = c − t·diag(A⁻¹) + t/(s − lo), ∇²ψ = −t·(A⁻¹∘A⁻¹) − t·diag(1/(s − lo)²), A = C − diag(s); steps are
    halved until A stays positive definite (Cholesky) and s > lo. Returns the last strictly feasible iterate.
    """
    C = C.to(dtype)
    s = s.to(dtype).clone()
    c = c.to(dtype)
    L, info = torch.linalg.cholesky_ex(C - torch.diag(s))
    for _ in range(steps):
        if int(info) != 0:
            break
        Ai = torch.cholesky_inverse(L)
        sl = 1.0 / (s - lo)
        g = c - t * Ai.diagonal() + t * sl
        H = t * (Ai * Ai) + torch.diag(t * sl * sl)
        Lh, info = torch.linalg.cholesky_ex(H)
        if int(info) != 0:
            break
        ds = torch.cholesky_solve(g[:, None], Lh)[:, 0]  # ascent: s + ds maximises the local quadratic model
        dec = float(g @ ds)
        a = 1.0
        for _ in range(30):
            sn = s + a * ds
            if bool((sn > lo).all()):
                Ln, info_n = torch.linalg.cholesky_ex(C - torch.diag(sn))
                if int(info_n) == 0:
                    break
            a *= 0.5
        else:
            break
        if a < 1.0:  # a backtracked step stops short of the boundary: the next factorisation is of that point
            s = s + 0.99 * a * ds
            L, info = torch.linalg.cholesky_ex(C - torch.diag(s))
        else:  # the full step: the factorisation checked above is the next one's
            s, L, info = sn, Ln, info_n
        if dec < 1e-10 * t * len(s):
            break
    return s


def row_clusters(c: torch.Tensor, k: int, iterations: int = 20, seed: int = 0) -> torch.Tensor:
    """k groups of rows with similar normalised weights c_i (rows × d, ≥ 0): spherical k-means, seeded, k-means++ start."""
    rows = c.shape[0]
    k = max(1, min(int(k), rows))
    if k == 1:
        return torch.zeros(rows, dtype=torch.long, device=c.device)
    X = c / c.norm(dim=1, keepdim=True).clamp_min(1e-300)
    g = torch.Generator(device="cpu").manual_seed(seed)
    centers = [X[int(torch.randint(rows, (1,), generator=g))]]
    for _ in range(1, k):
        sim = torch.stack([X @ m for m in centers], 1).amax(1)
        w = (1.0 - sim).clamp_min(0).cpu() + 1e-12
        centers.append(X[int(torch.multinomial(w, 1, generator=g))])
    M = torch.stack(centers)
    assign = torch.zeros(rows, dtype=torch.long, device=c.device)
    for _ in range(iterations):
        new = (X @ M.T).argmax(1)
        if bool((new == assign).all()) and _ > 0:
            break
        assign = new
        for j in range(k):
            sel = assign == j
            if bool(sel.any()):
                m = X[sel].sum(0)
                M[j] = m / m.norm().clamp_min(1e-300)
    return assign


@torch.no_grad()
def optimise_shift(
    problem: LayerProblem,
    *,
    rounds: int = 2,
    iterations: int = 300,
    round_iterations: int = 60,
    check_every: int = 10,
    tol: float = 3e-3,
    dtype: torch.dtype = torch.float32,
    matmul_dtype: torch.dtype | None = None,
    newton_steps: int = 6,
    t0: float = 1e-3,
    lam_max: float | None = None,
    z0: torch.Tensor | None = None,
    C: torch.Tensor | None = None,
    shifts: torch.Tensor | None = None,
    assign: torch.Tensor | None = None,
    best: torch.Tensor | None = None,
    centre_steps: int | None = None,
    centre_t: float = 0.03,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Root bound with optimised shifts (see the module docstring): (bounds, shifts, assign, Z, info).

    One shift per group of rows: ``shifts`` (K × d, C-units, each certified; default one group with the
    inverse-diagonal start) and ``assign`` (rows, group of each row; per-row / N:M patterns only when K > 1).
    Row i's relaxation uses δ_i = shifts[assign[i]] ⊙ q_i; each group's shift steps towards the barrier centre
    of its own rows' weights. ``bounds`` per row (rowwise patterns) or 1 element (unstructured), float64, each
    valid, the best over the rounds (and over ``best`` when given); ``Z`` the last relaxed point. ``rounds``
    shift updates with ``round_iterations`` FISTA iterations between them, ``iterations`` for the last relaxation
    (stopping at ``tol``). Without ``shifts``, the start is the inverse-diagonal shift moved to the barrier centre of
    the static weights Σ_i q_ij (``centre_steps`` Newton steps, default 12, 6 above d = 1024 where a step costs
    more than a relaxation iteration; barrier weight ``centre_t``/d; 0 steps: the inverse-diagonal shift itself).
    """
    from .bounds import _Reformulated, _relaxed, _scaled_corr  # noqa: PLC0415 (bounds imports this module)
    from ..solve.bnb.mask import correlation_extremes  # noqa: PLC0415

    W64, G64 = problem.W.to(torch.float64), problem.G.to(torch.float64)
    if C is None:
        C, live = _scaled_corr(G64)
    else:
        live = G64.diagonal() > 0
    q = W64 * W64 * G64.diagonal().clamp_min(0)[None, :] * live[None, :]
    if lam_max is None:
        lam_max = correlation_extremes(G64)[1]
    rows, d = q.shape
    if shifts is None:
        s0 = inverse_diagonal_shift(C)
        if centre_steps is None:
            centre_steps = 12 if d <= 1024 else 6
        if centre_steps > 0:
            c = q.sum(0)
            c = c + 1e-3 * c.mean() + 1e-300
            lo0 = min(float(s0.min()), 0.0) - 0.02
            s0 = certified_shift(C, shift_center(C, c / c.sum(), centre_t / d, s0 * (1 - 1e-3) - 1e-9, lo0,
                                                 steps=centre_steps))
        S = s0[None, :].clone()
    else:
        S = shifts.to(torch.float64).clone()
    K = S.shape[0]
    if assign is None:
        assign = torch.zeros(rows, dtype=torch.long, device=q.device)
    if K > 1 and not problem.pattern.rowwise:
        raise ValueError("one shift per group of rows needs a per-row or N:M pattern")
    lo = min(float(S.min()), 0.0) - 0.02
    run = dict(dtype=dtype, tol=tol, lam_max=lam_max, matmul_dtype=matmul_dtype)
    rowwise = problem.pattern.rowwise
    Z = z0
    history = []
    for k in range(rounds + 1):
        last = k == rounds
        b, Z, _ = _relaxed(problem, S[assign] * q, iterations if last else round_iterations, check_every, Z,
                           **{**run, "tol": tol if last else 0.0})
        best = b if best is None else (torch.maximum(best, b) if rowwise else (b if float(b.sum()) > float(best.sum()) else best))
        history.append(float(best.clamp_min(0).sum()))
        if last:
            break
        Zd = Z.to(torch.float64)
        F = _Reformulated(problem, S[assign] * q, torch.float64)
        P = F.product(Zd)
        cw = q * Zd * (1.0 - Zd)
        for j in range(K):
            sel = assign == j
            if not bool(sel.any()):
                continue
            c = cw[sel].sum(0)
            c = c + 1e-3 * c.mean() + 1e-300
            c = c / c.sum()
            s_c = shift_center(C, c, t0 * 0.3 ** k / d, S[j], lo, steps=newton_steps)
            # step length on the Frank-Wolfe bound of the group's rows at the current relaxed point
            pick, val = 0.5, -float("inf")
            for gam in (1.0, 0.5, 0.25):
                D = F.delta.clone()
                D[sel] = (S[j] + gam * (s_c - S[j]))[None, :] * q[sel]
                F.delta = D
                v = float(F.bound(Zd, P)[sel].clamp_min(0).sum()) if rowwise else float(F.bound(Zd, P).clamp_min(0).sum())
                if v > val:
                    pick, val = gam, v
            S[j] = certified_shift(C, S[j] + pick * (s_c - S[j]))
            D = F.delta.clone()
            D[sel] = S[j][None, :] * q[sel]
            F.delta = D
    info = {"shift_rounds": rounds, "shift_groups": K, "shift_history": history,
            "shift_median": float(S[:, live].median()) if bool(live.any()) else 0.0}
    return best, S, assign, Z, info


def refine_groups(problem: LayerProblem, best: torch.Tensor, shift: torch.Tensor, Z: torch.Tensor, groups: int,
                  **kw) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Deepen a layer's bound: ``groups`` clusters of rows (by q_i ⊙ z_i(1 − z_i) at the relaxed point Z), each
    starting from the layer's ``shift`` and optimised for its own rows (optimise_shift); per row the better bound."""
    W64, G64 = problem.W.to(torch.float64), problem.G.to(torch.float64)
    q = W64 * W64 * G64.diagonal().clamp_min(0)[None, :]
    Zd = Z.to(torch.float64)
    assign = row_clusters(q * Zd * (1.0 - Zd) + 1e-12 * q, groups)
    K = int(assign.max()) + 1
    S = shift.to(torch.float64).reshape(1, -1).expand(K, -1).clone()
    return optimise_shift(problem, shifts=S, assign=assign, z0=Z, best=best, **kw)
