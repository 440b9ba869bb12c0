"""1-swaps of a mask priced with the optimal refit of the kept weights, rows in batches (pure tensor functions).

Per row, with kept set S (k slots), pruned set P, b = G w, H = (G_SS)⁻¹ and the refit ŵ_S = x = H b_S, the error
after the optimal refit is

    E(S) = wᵀ G w − b_Sᵀ x = w_Pᵀ (G_PP − G_PS G_SS⁻¹ G_SP) w_P.

State per row: H, x, c = b − G ŵ (d-vector; c_S = 0) and the Schur complements s_q = G_qq − G_qS H G_Sq of the
pruned q. With K_p = H G_Sp, removing u (slot j) and adding p changes E by

    ΔE(p, u) = x_j² / H_jj − (c_p + K_pj x_j / H_jj)² / (s_p + K_pj² / H_jj)           (exact)

and, by Cauchy–Schwarz, ΔE(p, u) ≥ −g_p, g_p = c_p² / s_p (the gain of adding p without removing anything).
Screening: every step prices the ``probe`` pruned inputs of largest g_p against every kept slot (K_p for those:
O(k²) each) and applies the best improving swap found; a row whose probe finds none gets the exact search (inputs
in decreasing g_p until the next g_p ≤ −(best ΔE so far)), so a row stops only at a 1-swap local optimum of E.
An applied swap updates the state with two products by G and one rank-2 change of H (O(d² + k²) per row): with
h = H_{:,j} and y = G h (h in d-space),

    removal:  H̃ = H − h hᵀ / H_jj,  x̃ = x − h x_j / H_jj,  c̃ = c + y x_j / H_jj,  s̃ = s + y² / H_jj
    addition: v = H̃ G_Tp − e_j (slot j now holds p), t = G v / s̃_p (v in d-space, −1 at p),
              H = H̃ + v vᵀ / s̃_p,  x = x̃ − v c̃_p / s̃_p,  c = c̃ + c̃_p t,  s = s̃ − s̃_p t²

and s_u of the input u that left is computed directly. N:M prices only pairs inside one block of M, cs256 inside
one tile of 256 (a swap keeps every block's and tile's count). A row applies swaps while they lower E by more
than max(tol · ē, rounding noise) (ē the mean refit error of the rows of its batch); E never increases.
Float64 throughout; the state is rebuilt from G every ``refresh`` swaps so that the updates cannot drift.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .patterns import Pattern
from .progress import say


@dataclass
class RefitState:
    """Swap state of a batch of B rows (float64)."""

    S: torch.Tensor  # (B, k) kept inputs, one per slot
    H: torch.Tensor  # (B, k, k) (G_SS)⁻¹ in slot order
    x: torch.Tensor  # (B, k) refit weights per slot
    c: torch.Tensor  # (B, d) b − G ŵ
    s: torch.Tensor  # (B, d) Schur complement of every input against S (meaningful on P)
    kept: torch.Tensor  # (B, d) bool
    E: torch.Tensor  # (B,) error after the refit


def kept_slots(mask: torch.Tensor) -> torch.Tensor:
    """Kept indices per row, ascending (B, k); every row must keep the same count."""
    counts = mask.sum(1)
    k = int(counts[0]) if mask.shape[0] else 0
    if not bool((counts == k).all()):
        raise ValueError("refit swaps need the same kept count in every row")
    return torch.argsort((~mask).to(torch.int8), dim=1, stable=True)[:, :k]


def _chol(G: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
    B, k = S.shape
    L, info = torch.linalg.cholesky_ex(G[S[:, :, None], S[:, None, :]])
    if bool((info != 0).any()):
        raise ValueError("refit swaps: G_SS is singular on some row; use a damping (damp > 0)")
    return L


def refit_rows(W: torch.Tensor, G: torch.Tensor, S: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Optimal kept weights x = G_SS⁻¹ b_S (B, k) and the error after the refit E = wᵀGw − b_Sᵀ x (B,)."""
    b = W @ G
    bS = b.gather(1, S)
    x = torch.cholesky_solve(bS[:, :, None], _chol(G, S))[:, :, 0]
    return x, (W * b).sum(1) - (bS * x).sum(1)


def init_state(W: torch.Tensor, G: torch.Tensor, S: torch.Tensor) -> RefitState:
    """The state of rows W (B × d, float64) with kept inputs S (B × k), from G (d × d, float64)."""
    L = _chol(G, S)
    H = torch.cholesky_inverse(L)
    H = (H + H.transpose(1, 2)) / 2
    b = W @ G
    bS = b.gather(1, S)
    x = torch.cholesky_solve(bS[:, :, None], L)[:, :, 0]
    what = torch.zeros_like(W).scatter_(1, S, x)
    c = b - what @ G
    Z = torch.linalg.solve_triangular(L, G[S], upper=False)  # L⁻¹ G_{S,:}: s_q = G_qq − ‖Z_{:,q}‖²
    s = G.diagonal()[None, :] - (Z * Z).sum(1)
    kept = torch.zeros_like(W, dtype=torch.bool).scatter_(1, S, True)
    E = (W * b).sum(1) - (bS * x).sum(1)
    return RefitState(S, H, x, c, s, kept, E)


def gains(st: RefitState) -> torch.Tensor:
    """g_p = c_p² / s_p for pruned p (−inf on kept inputs, 0 where s_p ≤ 0): −g_p bounds every swap adding p."""
    g = torch.where(st.s > 0, st.c * st.c / st.s.clamp_min(torch.finfo(st.s.dtype).tiny), torch.zeros_like(st.s))
    return g.masked_fill(st.kept, float("-inf"))


def price(st: RefitState, G: torch.Tensor, pc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ΔE (B, C, k) of swapping pruned inputs pc (B, C) in for every kept slot (formula of the module docstring),
    and K_p = H G_Sp (B, C, k) of those inputs."""
    B, k = st.S.shape
    gpS = G[pc[:, :, None], st.S[:, None, :]]
    Kc = gpS @ st.H
    hjj = st.H.diagonal(dim1=1, dim2=2).clamp_min(torch.finfo(st.H.dtype).tiny)
    r = st.x / hjj
    cp = st.c.gather(1, pc)[:, :, None] + Kc * r[:, None, :]
    sp = st.s.gather(1, pc)[:, :, None] + Kc * Kc / hjj[:, None, :]
    gain = torch.where(sp > 0, cp * cp / sp.clamp_min(torch.finfo(sp.dtype).tiny), torch.zeros_like(sp))
    return (st.x * r)[:, None, :] - gain, Kc


def best_swaps(st: RefitState, G: torch.Tensor, pattern: Pattern, probe: int = 16, exhaustive: bool = True
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Best swap per row among the priced ones: (ΔE, entering input p, leaving slot j, K_p = H G_Sp), pairs priced.

    Prices the ``probe`` pruned inputs of largest g_p; ``exhaustive``: then the next ``probe`` while some unpriced
    g_p > −(best ΔE so far), which makes the result the row's exact best swap (ΔE ≥ −g_p)."""
    B, d = st.c.shape
    k = st.S.shape[1]
    m = d - k
    dev = st.c.device
    gs, order = torch.sort(gains(st), dim=1, descending=True)
    best = torch.full((B,), float("inf"), dtype=st.c.dtype, device=dev)
    bp = torch.zeros(B, dtype=torch.int64, device=dev)
    bj = torch.zeros(B, dtype=torch.int64, device=dev)
    bK = torch.zeros(B, k, dtype=st.c.dtype, device=dev)
    rows = None  # None: all rows (no gather)
    start, priced = 0, 0
    while start < m:
        stop = min(start + probe, m)
        sub = st if rows is None else _take(st, rows)
        r_idx = torch.arange(B, device=dev) if rows is None else rows
        pc = order[r_idx, start:stop]
        D, Kc = price(sub, G, pc)
        ok = pattern.same_block(pc[:, :, None], sub.S[:, None, :])
        if ok is not None:
            D = D.masked_fill(~ok, float("inf"))
        val, flat = D.reshape(r_idx.numel(), -1).min(1)
        better = val < best[r_idx]
        rb = r_idx[better]
        best[rb] = val[better]
        bp[rb] = pc[better, flat[better] // k]
        bj[rb] = flat[better] % k
        bK[rb] = Kc[better, flat[better] // k]
        priced += r_idx.numel() * (stop - start) * k
        start = stop
        if not exhaustive or start >= m:
            break
        rows = r_idx[gs[r_idx, start] > -best[r_idx]]
        if rows.numel() == 0:
            break
    return best, bp, bj, bK, priced


def apply_swaps(st: RefitState, G: torch.Tensor, go: torch.Tensor, p: torch.Tensor, j: torch.Tensor,
                Kp: torch.Tensor, dE: torch.Tensor) -> None:
    """Rows with ``go``: input p enters slot j (whose input u leaves), K_p = H G_Sp from the pricing; in place.

    Rank-one removal and addition fused into one rank-2 update of H (rows without ``go`` get a zero update)."""
    B, k = st.S.shape
    ar = torch.arange(B, device=go.device)
    g = go.to(st.H.dtype)
    S, H = st.S, st.H
    u = S[ar, j]
    h = H[ar, :, j].clone()
    hjj = h[ar, j]
    xj = st.x[ar, j]
    Kpj = Kp[ar, j]
    Kt = Kp - h * (Kpj / hjj)[:, None]  # H̃ G_Tp; zero in slot j
    sp = torch.where(go, st.s[ar, p] + Kpj * Kpj / hjj, torch.ones_like(hjj))
    cp = st.c[ar, p] + Kpj * xj / hjj
    v = Kt.clone()
    v[ar, j] = -1.0
    S_new = S.clone()
    S_new[go, j[go]] = p[go]
    hd = torch.zeros_like(st.c).scatter_(1, S, h)
    vd = torch.zeros_like(st.c).scatter_(1, S_new, v)
    y, t = (torch.cat([hd, vd]) @ G).split(B)
    t = t / sp[:, None]
    a, bcoef = g * xj / hjj, g * cp / sp
    st.c += y * a[:, None] + t * (g * cp)[:, None]
    st.s += g[:, None] * (y * y / hjj[:, None] - sp[:, None] * t * t)
    st.x -= h * a[:, None] + v * bcoef[:, None]
    U = torch.stack([-h * g[:, None], v * g[:, None]], dim=2)
    V = torch.stack([h / hjj[:, None], v / sp[:, None]], dim=2)
    H.baddbmm_(U, V.transpose(1, 2))
    rg = ar[go]
    if rg.numel():
        jg, vg = j[go], (-v / sp[:, None])[go]
        H[rg, jg, :] = vg
        H[rg, :, jg] = vg
        st.x[rg, jg] = (cp / sp)[go]
        ug, pg = u[go], p[go]
        guT = G[ug[:, None], S_new[go]]
        s_u = 1.0 / hjj[go] - (G[ug, pg] - (guT * Kt[go]).sum(1)) ** 2 / sp[go]
        st.s[rg, ug] = s_u
        st.c[rg, pg] = 0.0
        st.kept[rg, ug] = False
        st.kept[rg, pg] = True
        st.S[rg] = S_new[go]
        st.E[rg] += dE[go]


def _take(st: RefitState, rows: torch.Tensor) -> RefitState:
    return RefitState(st.S[rows], st.H[rows], st.x[rows], st.c[rows], st.s[rows], st.kept[rows], st.E[rows])


@dataclass
class RefitSwapResult:
    mask: torch.Tensor  # (rows, d) bool
    weight: torch.Tensor  # (rows, d) float64: the optimal kept weights of the mask, zero elsewhere
    errors: torch.Tensor  # (rows,) float64 error after the refit (recomputed from G at the end)
    start_errors: torch.Tensor  # (rows,) the start mask's error after the refit
    swaps: torch.Tensor  # (rows,) swaps applied
    converged: torch.Tensor  # (rows,) bool: no swap lowers E by more than the threshold
    iterations: int
    priced: int  # (input, slot) pairs priced exactly


def refit_swap_refine(W: torch.Tensor, G: torch.Tensor, mask: torch.Tensor, pattern: Pattern, *,
                      max_iter: int | None = None, tol: float = 1e-5, damp: float = 0.0, refresh: int = 64,
                      batch_rows: int = 64, probe: int = 16, mem_cap_bytes: float = 2 * 2**30) -> RefitSwapResult:
    """Refit-priced 1-swaps from ``mask`` until every row is 1-swap optimal (or ``max_iter`` swaps).

    Each step applies the best swap among the ``probe`` pruned inputs of largest g_p (all slots); a row whose probe
    finds no improving swap gets the exact search (:func:`best_swaps`, exhaustive), so a row only stops when no
    single swap improves it by more than the threshold. W (rows × d) and G in float64 on W's device; rows in batches of ``batch_rows`` (finished rows leave the batch).
    A row stops when its best ΔE ≥ −max(tol · ē, 1e-12 · (E_row + wᵀGw)). ``damp`` > 0 uses G + damp·I (the ridge
    objective, for singular G)."""
    W = W.to(torch.float64)
    G = G.to(dtype=torch.float64, device=W.device)
    if damp > 0:
        G = G + damp * torch.eye(G.shape[0], dtype=G.dtype, device=G.device)
    n_rows = W.shape[0]
    S_all = kept_slots(mask.to(W.device)).clone()
    k, d = S_all.shape[1], W.shape[1]
    batch_rows = max(1, min(batch_rows, int(mem_cap_bytes // (8 * (3 * k * k + 2 * k * d)))))
    weight = torch.zeros_like(W)
    errors = torch.zeros(n_rows, dtype=torch.float64, device=W.device)
    start = torch.zeros_like(errors)
    swaps = torch.zeros(n_rows, dtype=torch.int64, device=W.device)
    converged = torch.zeros(n_rows, dtype=torch.bool, device=W.device)
    energy = ((W @ G) * W).sum(1)
    iters, priced = 0, 0
    for b0 in range(0, n_rows, batch_rows):
        idx = torch.arange(b0, min(b0 + batch_rows, n_rows), device=W.device)
        st = init_state(W[idx], G, S_all[idx])
        start[idx] = st.E
        thr_all = torch.clamp(1e-12 * (st.E.abs() + energy[idx]), min=tol * float(st.E.mean()))
        live = idx.clone()  # rows of the layer still in the batch state
        thr = thr_all.clone()
        it = since = 0
        while live.numel() and (max_iter is None or it < max_iter):
            it += 1
            best, bp, bj, bK, n = best_swaps(st, G, pattern, probe, exhaustive=False)
            priced += n
            miss = (best >= -thr).nonzero().squeeze(1)
            if miss.numel():  # no improving swap among the probed inputs: the exact search decides
                b2, p2, j2, K2, n = best_swaps(_take(st, miss), G, pattern, max(4 * probe, (G.shape[0] - st.S.shape[1]) // 4),
                                               exhaustive=True)
                priced += n
                best[miss], bp[miss], bj[miss], bK[miss] = b2, p2, j2, K2
            go = best < -thr
            if bool(go.any()):
                apply_swaps(st, G, go, bp, bj, bK, best)
                swaps[live[go]] += 1
            converged[live[~go]] = True
            S_all[live] = st.S
            since += 1
            keep = go.nonzero().squeeze(1)
            if keep.numel() < live.numel():  # finished rows leave the batch
                st, live, thr = _take(st, keep), live[keep], thr[keep]
            if since >= refresh and live.numel():
                st = init_state(W[live], G, st.S)
                since = 0
            say(lambda: f"refit swaps: rows {b0}–{int(idx[-1]) + 1} of {n_rows}, swap {it}, {live.numel()} rows left")
        iters = max(iters, it)
        x, errors[idx] = refit_rows(W[idx], G, S_all[idx])
        weight[idx] = torch.zeros_like(W[idx]).scatter_(1, S_all[idx], x)
    out = torch.zeros(W.shape, dtype=torch.bool, device=W.device).scatter_(1, S_all, True)
    return RefitSwapResult(out, weight, errors, start, swaps, converged, iters, priced)
