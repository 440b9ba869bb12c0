"""Several exactly evaluated swaps per row and iteration: greedy acceptance with exact cross terms (N:M) and the
candidate block (per-row patterns), with the float64 residual Gram C = R G kept exact."""
from __future__ import annotations

import torch

from ..layer_math import residual
from .pairs import swap_costs

def accept_swaps(W64: torch.Tensor, G: torch.Tensor, C64: torch.Tensor, p: torch.Tensor, u: torch.Tensor,
                 valid: torch.Tensor, thresh: torch.Tensor, max_accept: int | None = None,
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Greedy exact acceptance of candidate swaps (rows, J) in order j = 0, 1, …, in float64.

    Candidate j is accepted when it is ``valid``, the row has accepted fewer than ``max_accept``
    (default J), it shares no index with an accepted swap of its row,
    and Δ_j + Σ_{accepted l} 2 δ_lᵀ G δ_j < −thresh (δ = −w_p e_p + w_u e_u: the exact change of the
    error given the swaps accepted before it). Returns (accepted (rows, J) bool, the exact error
    change per row (float64, ≤ 0), Δ of column 0 alone (float64)).
    """
    rows, J = p.shape
    G64 = lambda i, j: G[i, j].to(torch.float64)  # noqa: E731  (gathered entries only: no d×d copy)
    wp, wu = W64.gather(1, p), W64.gather(1, u)
    d0 = (wp * wp * G64(p, p) - 2 * wp * C64.gather(1, p) + wu * wu * G64(u, u) + 2 * wu * C64.gather(1, u)
          - 2 * wp * wu * G64(p, u))
    acc = torch.zeros(rows, J, dtype=torch.bool, device=W64.device)
    total = torch.zeros(rows, dtype=torch.float64, device=W64.device)
    n_acc = torch.zeros(rows, dtype=torch.long, device=W64.device)
    max_accept = J if max_accept is None else max_accept
    J_used = int(valid.sum(1).max()) if valid.numel() else 0  # columns past every row's last valid one: skip
    for j in range(min(J, J_used)):
        dj = d0[:, j]
        ok = valid[:, j] & (n_acc < max_accept)
        if j:
            pl, ul, al = p[:, :j], u[:, :j], acc[:, :j]
            pj, uj = p[:, j : j + 1], u[:, j : j + 1]
            cross = (wp[:, :j] * wp[:, j : j + 1] * G64(pl, pj) - wp[:, :j] * wu[:, j : j + 1] * G64(pl, uj)
                     - wu[:, :j] * wp[:, j : j + 1] * G64(ul, pj) + wu[:, :j] * wu[:, j : j + 1] * G64(ul, uj))
            dj = dj + 2 * (cross * al).sum(1)
            ok = ok & ~((al & ((pl == pj) | (ul == uj))).any(1))
        ok = ok & (dj < -thresh)
        acc[:, j] = ok
        n_acc += ok
        total = total + torch.where(ok, dj, torch.zeros_like(dj))
    return acc, total, d0[:, 0]


# ---- several swaps per row on a small candidate block --------------------------------------------------
def block_swaps(W64: torch.Tensor, G: torch.Tensor, C64: torch.Tensor, P: torch.Tensor, U: torch.Tensor,
                thresh: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Up to ``steps`` sequential exact improving swaps per row inside a candidate block.

    Row i offers the pruned candidates P[i] (sp,) and the kept candidates U[i] (su,); the pair
    (P[i, 0], U[i, 0]) is applied first (the caller passes the row's exact best 1-swap there). Every
    further step takes the pair of the block with the smallest Δ(p, u) = a_p + b_u − 2 w_p w_u G_pu
    among candidates not used yet in this call (the swaps are disjoint), selected in W's working
    precision (float32 for float32 G) and then evaluated in float64 from the float64 c of the block: the
    swap is applied when that exact Δ is < −thresh[i], which is then the exact change of the error
    given the swaps applied before it. After a swap (p, u), c_S ← c_S − w_p G[p, S] + w_u G[u, S] on
    the block's indices S = P[i] ∪ U[i] (two gathered rows of G per row and step). A row stops at its
    first step without such a swap; rows that stopped are compacted away when fewer than half remain.

    Cost per step and live row: sp·su for the selection (the pair terms w_p w_u G_pu of the block are
    gathered once), O(sp + su) for the update.
    Returns (taken (rows, steps) bool, p (rows, steps), u (rows, steps), Δ (rows, steps) float64).
    """
    rows, sp = P.shape
    su = U.shape[1]
    dev = W64.device
    d = G.shape[0]
    sel_dt = torch.float64 if G.dtype == torch.float64 else torch.float32
    Gflat = G.reshape(-1)
    S = torch.cat([P, U], 1)
    wS, cS = W64.gather(1, S), C64.gather(1, S)
    s2 = wS * wS * Gflat[S * (d + 1)].to(torch.float64)
    Q = (G[P[:, :, None], U[:, None, :]].to(sel_dt) * wS[:, :sp, None].to(sel_dt)) * wS[:, None, sp:].to(sel_dt) * -2
    blocked = torch.zeros(rows, sp, su, dtype=torch.bool, device=dev)
    taken = torch.zeros(rows, steps, dtype=torch.bool, device=dev)
    out_p = torch.zeros(rows, steps, dtype=torch.long, device=dev)
    out_u = torch.zeros(rows, steps, dtype=torch.long, device=dev)
    out_d = torch.zeros(rows, steps, dtype=torch.float64, device=dev)
    live = torch.arange(rows, device=dev)  # original row of each live slot
    alive = torch.ones(rows, dtype=torch.bool, device=dev)
    th = thresh
    inf = float("inf")
    for step in range(steps):
        n = live.numel()
        r = torch.arange(n, device=dev)
        free = alive
        if step == 0:
            pi = torch.zeros(n, dtype=torch.long, device=dev)
            ui = torch.zeros(n, dtype=torch.long, device=dev)
        else:
            wc = (2 * wS * cS).to(sel_dt)
            s2w = s2.to(sel_dt)
            D = (Q + (s2w[:, :sp] - wc[:, :sp])[:, :, None]).add_((s2w[:, sp:] + wc[:, sp:])[:, None, :])
            idx = D.masked_fill_(blocked, inf).view(n, -1).argmin(1)
            pi, ui = idx // su, idx % su
            free = alive & ~blocked[r, pi, ui]  # every pair of the block used: nothing left to swap
        p, u = P[r, pi], U[r, ui]
        wp, wu = wS[r, pi], wS[r, sp + ui]
        val = ((wp * wp * Gflat[p * (d + 1)].to(torch.float64) - 2 * wp * cS[r, pi])
               + (wu * wu * Gflat[u * (d + 1)].to(torch.float64) + 2 * wu * cS[r, sp + ui])
               - 2 * wp * wu * Gflat[p * d + u].to(torch.float64))
        ok = free & (val < -th)
        alive = ok
        taken[live, step] = ok
        out_p[live, step], out_u[live, step], out_d[live, step] = p, u, val
        f = ok.to(torch.float64)
        cS += (-(f * wp))[:, None] * Gflat[p[:, None] * d + S].to(torch.float64)
        cS += (f * wu)[:, None] * Gflat[u[:, None] * d + S].to(torch.float64)
        blocked[r, pi, :] |= ok[:, None]
        blocked[r, :, ui] |= ok[:, None]
        if step + 1 == steps:
            break
        m = int(ok.sum())
        if m == 0:
            break
        if 2 * m <= n:  # compact the live rows
            k = ok.nonzero()[:, 0]
            live, alive, th = live[k], alive[k], th[k]
            P, U, S, wS, cS, s2, Q, blocked = P[k], U[k], S[k], wS[k], cS[k], s2[k], Q[k], blocked[k]
    return taken, out_p, out_u, out_d


def _block_candidates(W: torch.Tensor, G: torch.Tensor, C: torch.Tensor, mask: torch.Tensor, p0: torch.Tensor,
                      u0: torch.Tensor, keep: int, size: int, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidate block per row for ``block_swaps``: (P (rows, sp), U (rows, su)), the row's best pair (p0, u0)
    in slot 0, then the pruned p with the smallest α_p = a_p − σ_p² and the kept u with the smallest
    β_u = b_u − σ_u² (σ = |w| h: the screening bound's terms, which favour pairs that can interact
    strongly), sp = min(size, d − k), su = min(size, k)."""
    sp, su = min(size, W.shape[1] - keep), min(size, keep)
    a, b = swap_costs(W, G.diagonal(), C)
    sig2 = (W.abs() * h).square()
    inf = float("inf")
    kp = (a - sig2).masked_fill_(mask, inf).scatter_(1, p0[:, None], inf)
    ku = (b - sig2).masked_fill_(~mask, inf).scatter_(1, u0[:, None], inf)
    P = torch.cat([p0[:, None], kp.topk(sp - 1, 1, largest=False).indices], 1)
    U = torch.cat([u0[:, None], ku.topk(su - 1, 1, largest=False).indices], 1)
    return P, U


def _update_residual_gram(C64: torch.Tensor, W64: torch.Tensor, G: torch.Tensor, rows: torch.Tensor,
                          p: torch.Tensor, u: torch.Tensor) -> None:
    """C64[i] += −w_ip G[p, :] + w_iu G[u, :] for every applied swap (i, p, u), in place, in float64."""
    idx = torch.cat([p, u])
    coef = torch.cat([-W64[rows, p], W64[rows, u]])
    src = G.index_select(0, idx).to(torch.float64).mul_(coef[:, None])
    C64.index_add_(0, torch.cat([rows, rows]), src)


def _exact_residual_gram(W64: torch.Tensor, G: torch.Tensor, mask: torch.Tensor, mem_cap_bytes: float) -> torch.Tensor:
    """C = R G in float64 (R = W ⊙ (1 − m)), over column blocks of G so that no d × d float64 copy is made."""
    rows, d = W64.shape
    R = residual(W64, mask)
    C = torch.empty(rows, d, dtype=torch.float64, device=W64.device)
    cols = max(1, min(d, int(mem_cap_bytes // max(1, 8 * d))))
    for s in range(0, d, cols):
        C[:, s : s + cols] = R @ G[:, s : s + cols].to(torch.float64)
    return C
