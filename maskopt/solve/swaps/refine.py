"""The 1-swap local search over all rows: per iteration each active row's best swap (by the pattern's strategy),
further exactly evaluated swaps, and the retirement of rows that are 1-swap optimal or below the tolerance."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..layer_math import residual
from ..patterns import TILE, Pattern
from ..progress import say
from .block import _block_candidates, _exact_residual_gram, _update_residual_gram, accept_swaps, block_swaps
from .pairs import (_BLOCK, _BYTES_PER_BLOCK_PAIR, _CANDIDATES_PER_SWAP, _NOISE_FACTOR, DEFAULT_SWAPS_PER_ITER,
                    DEFAULT_TOL, _chunk_rows, best_swaps_nm, best_swaps_per_row, memory_cap_bytes, pair_bound_factors,
                    swap_delta)
from .screening import SearchStats, screened_swaps_per_row

@dataclass
class SwapResult:
    mask: torch.Tensor
    swaps: torch.Tensor  # swaps applied per row
    iterations: int  # iterations run (the longest row)
    converged: torch.Tensor  # rows with no 1-swap better than the rounding noise (1-swap optimal)
    stopped_early: torch.Tensor  # rows stopped because their best swap was below the tolerance
    errors: torch.Tensor  # tracked per-row error at the end (float64, exact)
    initial_errors: torch.Tensor  # per-row error of the warm start (float64)
    pairs_examined: int = 0  # pairs whose Δ was evaluated (screened search) or all pairs (exhaustive)
    pairs_total: int = 0  # pairs an exhaustive search evaluates over the same iterations


@dataclass
class _Search:
    """What every iteration's strategy reads: the weights (working and float64), G, the residual Gram C64 = R G
    (float64, exact), the mask, the pattern's settings and the work counters."""

    W: torch.Tensor
    W64: torch.Tensor
    G: torch.Tensor
    C64: torch.Tensor
    mask: torch.Tensor
    pattern: Pattern
    keep: int
    search: str
    swaps_per_iter: int
    mem_cap_bytes: float
    probe: int
    h: torch.Tensor | None  # pair-bound factors (screened search and candidate blocks)
    tile: int | None  # cs256: swaps stay inside a tile of TILE inputs
    stats: SearchStats


def swap_refine(W: torch.Tensor, G: torch.Tensor, mask: torch.Tensor, pattern: Pattern, keep: int,
                max_iter: int | None = None, *, search: str = "screened",
                swaps_per_iter: int = DEFAULT_SWAPS_PER_ITER, tol: float = DEFAULT_TOL,
                mem_cap_bytes: float | None = None, probe: int = 16) -> SwapResult:
    """1-swap local search per row (any number of rows; rows sharing G can be stacked), in W's dtype.

    Each iteration finds every active row's exact best 1-swap (``search``: 'screened' or 'exhaustive';
    same result, different work), applies it and then up to ``swaps_per_iter`` − 1 further disjoint,
    exactly evaluated improving swaps per row (per-row patterns: ``block_swaps`` on a candidate block;
    N:M: ``accept_swaps``), and retires rows that are 1-swap optimal (Δ ≥ −noise) or whose best
    swap is below the tolerance (Δ > −tol · mean row error). ``max_iter`` None: until every row
    retired. ``swaps_per_iter = 1`` with ``tol = 0`` is classical best-improvement local search.
    ``mem_cap_bytes``: cap on the temporaries (default: ``memory_cap_bytes(W.device)``).
    """
    _check(pattern, search, swaps_per_iter, tol)
    mem_cap_bytes = memory_cap_bytes(W.device) if mem_cap_bytes is None else mem_cap_bytes
    G = G.to(dtype=W.dtype, device=W.device)
    mask = mask.clone().bool()
    rows = W.shape[0]
    W64 = W.to(torch.float64)
    C64 = _exact_residual_gram(W64, G, mask, mem_cap_bytes)
    err = (residual(W64, mask) * C64).sum(1)
    err0 = err.clone()
    eps = torch.finfo(W.dtype).eps
    smax = (W64.abs() * G.diagonal().to(torch.float64).clamp_min(0).sqrt()).max(1).values
    screen = pattern.kind != "nm" and (search == "screened" or swaps_per_iter > 1)
    st = _Search(W, W64, G, C64, mask, pattern, keep, search, swaps_per_iter, mem_cap_bytes, probe,
                 pair_bound_factors(G) if screen else None, TILE if pattern.kind == "cs256" else None, SearchStats())
    step = _step_nm if pattern.kind == "nm" else _step_rows
    swaps = torch.zeros(rows, dtype=torch.long, device=W.device)
    converged = torch.zeros(rows, dtype=torch.bool, device=W.device)
    stopped = torch.zeros(rows, dtype=torch.bool, device=W.device)
    active = torch.arange(rows, device=W.device)
    it, limit = 0, (max_iter if max_iter is not None else float("inf"))
    while active.numel() and it < limit:
        noise = _NOISE_FACTOR * eps * (2 * smax[active] + err[active].clamp_min(0).sqrt()).square()
        thresh = torch.maximum(noise, tol * err.sum() / rows)
        moved, best64, change, (rows_a, pa, ua) = step(st, active, noise, thresh)
        conv_now = ~moved & (best64 >= -noise)  # no swap beyond the noise: 1-swap optimal
        converged[active[conv_now]] = True
        stopped[active[~moved & ~conv_now]] = True  # best swap under the tolerance
        if rows_a.numel():
            mask[rows_a, pa] = True
            mask[rows_a, ua] = False
            _update_residual_gram(C64, W64, G, rows_a, pa, ua)
            err[active] += change
            swaps.index_add_(0, rows_a, torch.ones_like(rows_a))
        active = active[moved]
        it += 1
        say(lambda: f"swap iteration {it}: {rows - active.numel()}/{rows} rows done")
    return SwapResult(mask, swaps, it, converged, stopped, err, err0, st.stats.examined, st.stats.total)


def _check(pattern: Pattern, search: str, swaps_per_iter: int, tol: float) -> None:
    if not pattern.rowwise:
        raise ValueError("SparseSwaps needs a per-row or N:M pattern (swaps keep every row's count); "
                         "got 'unstructured'")
    if search not in ("screened", "exhaustive"):
        raise ValueError(f"search must be 'screened' or 'exhaustive', got {search!r}")
    if swaps_per_iter < 1:
        raise ValueError(f"swaps_per_iter must be ≥ 1, got {swaps_per_iter}")
    if tol < 0:
        raise ValueError(f"tol must be ≥ 0, got {tol}")


def _step_nm(st: _Search, active: torch.Tensor, noise: torch.Tensor, thresh: torch.Tensor):
    """N:M: the best pair of the best blocks of M (exhaustive inside a block), accepted greedily with their exact
    cross terms. Returns (moved, best Δ in float64, change of the error, (rows, p, u) of the applied swaps)."""
    pat, J, d = st.pattern, st.swaps_per_iter, st.W.shape[1]
    n_cand = _CANDIDATES_PER_SWAP * J if J > 1 else 1
    Ca = st.C64[active].to(st.W.dtype)
    bd, bp, bu = best_swaps_nm(st.W[active], st.G, Ca, st.mask[active], pat.m, st.mem_cap_bytes, top=n_cand)
    npairs = active.numel() * (d // pat.m) * pat.n * (pat.m - pat.n)
    st.stats.add(SearchStats(npairs, npairs))
    valid = bd <= (-noise).to(st.W.dtype)[:, None]
    acc, change, best64 = accept_swaps(st.W64[active], st.G, st.C64[active], bp, bu, valid, thresh, J)
    best64 = torch.where(valid[:, 0], best64, torch.full_like(best64, float("inf")))
    ia, ja = acc.nonzero(as_tuple=True)
    return acc.any(1), best64, change, (active[ia], bp[ia, ja], bu[ia, ja])


def _step_rows(st: _Search, active: torch.Tensor, noise: torch.Tensor, thresh: torch.Tensor):
    """Per-row and cs256: each row's exact best pair (screened, or exhaustive inside tiles for cs256), then further
    exact swaps on a candidate block (per-row) — same return as ``_step_nm``."""
    J, keep, dev = st.swaps_per_iter, st.keep, st.W.device
    Wa, Ma, Ca = st.W[active], st.mask[active], st.C64[active].to(st.W.dtype)
    tau = (-noise).to(st.W.dtype)
    if st.search == "screened" and st.tile is None:
        bd, bp, bu = screened_swaps_per_row(Wa, st.G, Ca, Ma, keep, st.h, tau, probe=st.probe,
                                            mem_cap_bytes=st.mem_cap_bytes, stats=st.stats)
    else:
        b0, q0, v0 = best_swaps_per_row(Wa, st.G, Ca, Ma, keep, st.mem_cap_bytes, block=st.tile)
        bd, bp, bu = b0[:, None], q0[:, None], v0[:, None]
        npairs = active.numel() * keep * (st.W.shape[1] - keep)
        st.stats.add(SearchStats(npairs, npairs))
    p0, u0 = bp[:, 0], bu[:, 0]
    best64 = swap_delta(st.W64[active], st.G, st.C64[active], p0, u0, exact=True)
    best64 = torch.where(bd[:, 0] <= tau, best64, torch.full_like(best64, float("inf")))
    moved = best64 < -thresh
    mv = moved.nonzero()[:, 0]
    change = torch.zeros(active.numel(), dtype=torch.float64, device=dev)
    block = max(_BLOCK, 2 * J) if J > 1 else 1
    parts = []
    step = _chunk_rows(_BYTES_PER_BLOCK_PAIR * block * block, st.mem_cap_bytes)
    for s in range(0, mv.numel(), step):  # several swaps per row on a candidate block, row chunks
        m = mv[s : s + step]
        if J > 1 and st.tile is None:
            P, U = _block_candidates(Wa[m], st.G, Ca[m], Ma[m], p0[m], u0[m], keep, block, st.h)
        else:
            P, U = p0[m, None], u0[m, None]
        taken, ps, us, ds = block_swaps(st.W64[active[m]], st.G, st.C64[active[m]], P, U, thresh[m],
                                        J if st.tile is None else 1)
        change[m] = (ds * taken).sum(1)
        ia, ja = taken.nonzero(as_tuple=True)
        parts.append((active[m][ia], ps[ia, ja], us[ia, ja]))
    applied = tuple(torch.cat(x) for x in zip(*parts)) if parts else (active[:0],) * 3
    return moved, best64, change, applied
