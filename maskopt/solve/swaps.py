"""Exact 1-swap refinement of a mask, all rows in parallel (pure tensor functions).

Per row, with r = w ⊙ (1 − m) the pruned part and c = G r, swapping p (pruned → kept) with
u (kept → pruned) changes the error r ᵀ G r by

    Δ(p, u) = w_p² G_pp − 2 w_p c_p + w_u² G_uu + 2 w_u c_u − 2 w_p w_u G_pu,

and afterwards c ← c − w_p G[:, p] + w_u G[:, u]. Each iteration applies the best pair of every
row whose Δ is negative; a row stops when no swap improves it. Per-row patterns search all
(pruned, kept) pairs of the row; N:M searches pairs inside each block of M only; cs256 searches
pairs inside each tile of 256 inputs only (a swap keeps every tile's count, so its multiple of g).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .patterns import TILE, Pattern


def swap_delta(w: torch.Tensor, G: torch.Tensor, c: torch.Tensor, p: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Δ(p, u) per row for index tensors p, u of shape (rows,) (p pruned, u kept)."""
    rows = torch.arange(w.shape[0], device=w.device)
    wp, wu = w[rows, p], w[rows, u]
    return (wp * wp * G[p, p] - 2 * wp * c[rows, p] + wu * wu * G[u, u] + 2 * wu * c[rows, u]
            - 2 * wp * wu * G[p, u])


def _chunk_rows(pairs_per_row: int, itemsize: int, mem_cap_bytes: float) -> int:
    """Rows per chunk so that the (chunk × pairs) temporaries (≈3 live copies) stay under the cap."""
    return max(1, int(mem_cap_bytes // max(1, 3 * pairs_per_row * itemsize)))


def best_swaps_per_row(W: torch.Tensor, G: torch.Tensor, C: torch.Tensor, mask: torch.Tensor, keep: int,
                       mem_cap_bytes: float = 256e6, block: int | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(Δ_best, p, u) per row over all pruned p × kept u of the row (each row keeps ``keep``).

    With ``block``, only pairs inside the same block of ``block`` consecutive inputs (cs256 tiles).
    The pair search gathers the (d−k) × k block G[P_i, K_i] per row, in row chunks under the cap.
    """
    rows, d = W.shape
    gd = G.diagonal()
    A = W * W * gd - 2 * W * C  # cost part of reviving p
    B = W * W * gd + 2 * W * C  # cost part of pruning u
    order = torch.argsort(mask.to(torch.int8), dim=1, descending=True, stable=True)
    K, P = order[:, :keep], order[:, keep:]
    nk, np_ = keep, d - keep
    best = torch.full((rows,), float("inf"), dtype=W.dtype, device=W.device)
    bp = torch.zeros(rows, dtype=torch.long, device=W.device)
    bu = torch.zeros(rows, dtype=torch.long, device=W.device)
    if nk == 0 or np_ == 0:
        return best, bp, bu
    step = _chunk_rows(nk * np_, W.element_size(), mem_cap_bytes)
    for s in range(0, rows, step):
        Pi, Ki = P[s : s + step], K[s : s + step]
        w = W[s : s + step]
        wP, wK = w.gather(1, Pi), w.gather(1, Ki)
        delta = G[Pi[:, :, None], Ki[:, None, :]]  # (b, np, nk)
        delta.mul_(wP[:, :, None]).mul_(wK[:, None, :]).mul_(-2)
        delta.add_(A[s : s + step].gather(1, Pi)[:, :, None]).add_(B[s : s + step].gather(1, Ki)[:, None, :])
        if block is not None:
            delta.masked_fill_((Pi[:, :, None] // block) != (Ki[:, None, :] // block), float("inf"))
        val, idx = delta.reshape(delta.shape[0], -1).min(1)
        best[s : s + step] = val
        bp[s : s + step] = Pi.gather(1, (idx // nk)[:, None])[:, 0]
        bu[s : s + step] = Ki.gather(1, (idx % nk)[:, None])[:, 0]
    return best, bp, bu


def best_swaps_nm(W: torch.Tensor, G: torch.Tensor, C: torch.Tensor, mask: torch.Tensor, m: int,
                  mem_cap_bytes: float = 256e6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(Δ_best, p, u) per row over pairs inside the same block of ``m`` consecutive inputs."""
    rows, d = W.shape
    nb = d // m
    gd = G.diagonal()
    A = (W * W * gd - 2 * W * C).masked_fill(mask, float("inf"))
    B = (W * W * gd + 2 * W * C).masked_fill(~mask, float("inf"))
    blk = torch.arange(d, device=W.device).reshape(nb, m)
    Gb = G[blk[:, :, None], blk[:, None, :]]  # (nb, m, m) diagonal blocks
    best = torch.empty(rows, dtype=W.dtype, device=W.device)
    flat_idx = torch.empty(rows, dtype=torch.long, device=W.device)
    step = _chunk_rows(nb * m * m, W.element_size(), mem_cap_bytes)
    for s in range(0, rows, step):
        w = W[s : s + step].reshape(-1, nb, m)
        delta = w[:, :, :, None] * Gb[None] * w[:, :, None, :] * -2  # (b, nb, m_p, m_u)
        delta.add_(A[s : s + step].reshape(-1, nb, m)[:, :, :, None]).add_(B[s : s + step].reshape(-1, nb, m)[:, :, None, :])
        best[s : s + step], flat_idx[s : s + step] = delta.reshape(delta.shape[0], -1).min(1)
    b, rest = flat_idx // (m * m), flat_idx % (m * m)
    return best, b * m + rest // m, b * m + rest % m


@dataclass
class SwapResult:
    mask: torch.Tensor
    swaps: torch.Tensor  # number of swaps applied per row
    iterations: int  # iterations run (the longest row)
    converged: torch.Tensor  # rows where no improving 1-swap exists at the end


def swap_refine(W: torch.Tensor, G: torch.Tensor, mask: torch.Tensor, pattern: Pattern, keep: int,
                max_iter: int | None = 100, *, rtol: float = 1e-10, mem_cap_bytes: float = 256e6,
                refresh: int = 32) -> SwapResult:
    """Best-improvement 1-swap local search per row until no swap improves or ``max_iter`` iterations.

    A swap is applied when Δ < −rtol · (w_iᵀ G w_i) (scale-free guard against rounding noise).
    c = G r is updated incrementally and recomputed every ``refresh`` iterations.
    """
    if not pattern.rowwise:
        raise ValueError("SparseSwaps needs a per-row or N:M pattern (swaps keep every row's count); "
                         "got 'unstructured'")
    mask = mask.clone().bool()
    rows, d = W.shape
    dev = W.device
    C = (W * (~mask)) @ G
    thresh = rtol * ((W @ G) * W).sum(1).clamp_min(torch.finfo(W.dtype).tiny)
    swaps = torch.zeros(rows, dtype=torch.long, device=dev)
    active = torch.arange(rows, device=dev)
    it = 0
    limit = max_iter if max_iter is not None else float("inf")
    while active.numel() and it < limit:
        if it and it % refresh == 0:
            C[active] = (W[active] * (~mask[active])) @ G
        Wa, Ca, Ma = W[active], C[active], mask[active]
        if pattern.kind == "nm":
            best, p, u = best_swaps_nm(Wa, G, Ca, Ma, pattern.m, mem_cap_bytes)
        else:
            best, p, u = best_swaps_per_row(Wa, G, Ca, Ma, keep, mem_cap_bytes,
                                            block=TILE if pattern.kind == "cs256" else None)
        good = best < -thresh[active]
        active, p, u = active[good], p[good], u[good]
        if not active.numel():
            break
        mask[active, p] = True
        mask[active, u] = False
        wp, wu = W[active, p], W[active, u]
        C[active] += wu[:, None] * G[u] - wp[:, None] * G[p]
        swaps[active] += 1
        it += 1
    converged = torch.ones(rows, dtype=torch.bool, device=dev)
    converged[active] = False
    return SwapResult(mask, swaps, it, converged)
