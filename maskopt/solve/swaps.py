"""Exact 1-swap refinement of a mask, all rows in parallel (pure tensor functions).

Per row, with w the weights, r = w ⊙ (1 − m) the pruned part and c = G r, swapping p (pruned → kept)
with u (kept → pruned) changes the error rᵀ G r by

    Δ(p, u) = a_p + b_u − 2 w_p w_u G_pu,   a_p = w_p² G_pp − 2 w_p c_p,   b_u = w_u² G_uu + 2 w_u c_u,

and afterwards c ← c − w_p G[:, p] + w_u G[:, u]. Only c changes between iterations.

**Screened search (exact).** Let ρ_j = max_{v≠j} |G_jv| / √(G_jj G_vv) and h_j = √(ρ_j G_jj); then
|G_pu| ≤ min(ρ_p, ρ_u) √(G_pp G_uu) ≤ h_p h_u for every p ≠ u (this uses only the entries of G, not
that G is PSD). With σ_j = |w_j| h_j and 2σ_pσ_u ≤ σ_p² + σ_u² (AM-GM):

    Δ(p, u) ≥ (a_p − σ_p²) + (b_u − σ_u²) =: α_p + β_u.

The bound is separable, so all pairs with α_p + β_u ≤ τ form a staircase of the two sorted lists:
for the j-th smallest α, the β's below τ − α_j are a prefix (one ``searchsorted``). A probe of the
16 × 16 pairs with the smallest α and β gives τ (the best Δ seen); Δ is evaluated exactly on the
staircase only (tiles of 4 consecutive p's sharing the longest prefix; about 0.5–2 % of the
(d − k)·k pairs on SmolLM2 layers, see bench/results/swaps_speed.md), so the returned pair is the
exact minimizer of the same Δ formula, with the same operation order and tie rule (smallest p, then
u), as the exhaustive search. α and β are deflated by 16·eps·(|a| + 2σ²) (resp. b) so that rounding
can never screen out a pair whose computed Δ is ≤ τ.

**Several swaps per iteration (per-row patterns).** After the search, each row that improves gets a
candidate block: its best pair plus the 63 pruned p with the smallest α_p and the 63 kept u with the
smallest β_u (the bound's terms). ``block_swaps`` applies the best pair, then repeatedly the best
pair of the block among unused indices (selected in working precision, then evaluated in float64 from
the float64 c of the block, which is updated exactly after every swap: c_S ← c_S − w_p G[p, S] +
w_u G[u, S]), up to ``swaps_per_iter`` per row, while that exact Δ is below −threshold. Each applied
swap is therefore the row's true best 1-swap (the first) or an exactly evaluated improving one given
the swaps before it; the tracked error is exact (float64) and never increases. N:M patterns take the
best pairs of several blocks of M (disjoint by construction) and accept them greedily with their exact
cross terms (``accept_swaps``): candidate j is taken when its change given the accepted ones,
Δ_j + Σ_l 2 δ_lᵀ G δ_j (δ = −w_p e_p + w_u e_u), is below −threshold.

Measured (bench/results/swaps_speed.md, SmolLM2-135M block 1, 50 % per row, 1 thread on the shared
2-core CPU): the candidate block lowers down_proj (576 × 1536) from 61 iterations of ≤ 8 greedy
disjoint swaps (about 2.6 accepted per row and iteration) to 21 iterations (≈ 7 per row and
iteration), and the block's 7 layers at 50 % from 18.8 s to 11.0 s in one run (load ≈ 2.6; 89 s
for the old code under load ≈ 9), with the same or lower error on every layer (down_proj 0.5446 vs
0.5448 of Wanda's). SparseGPT's layer solves take 0.69 s in that run: 15.9× (old 27×); 2:4 is
unchanged at ≈ 10× (its search is exhaustive inside the blocks of M). A tighter product bound Δ ≥ a_p + b_u − 2 σ_p σ_u (u grouped by
σ) was tried and dropped: with the probe's τ it screened out only slightly more pairs (0.61 % vs
0.76 % examined on gate_proj) at a higher cost per pair.

**Thresholds.** In working precision with unit roundoff ε the computed Δ(p, u) is off by at most
≈ 2ε(s_p + s_u + √e)² (s_j = |w_j|√G_jj, |c_p| ≤ √G_pp √e by Cauchy–Schwarz, e the row error), so
changes above −noise_i = −4ε(2 max_j s_j + √e_i)² are indistinguishable from zero: a row whose best
Δ ≥ −noise_i is 1-swap optimal ("converged"). A row also stops ("stopped early") when its best
Δ > −tol · ē, ē = (Σ errors of the rows passed in) / rows: the swap would lower the layer error by
less than tol / rows of it. Swaps are accepted when Δ < −max(noise_i, tol · ē).

Per-row patterns search all (pruned, kept) pairs of the row; N:M searches pairs inside each block
of M (exhaustively: that is only M·d pairs per row) and applies the best pairs of several blocks; cs256
searches pairs inside each tile of 256 inputs only (exhaustively; a swap keeps every tile's count, so its
multiple of g), one swap per row and iteration.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from .layer_math import residual
from .patterns import TILE, Pattern
from .progress import say

DEFAULT_TOL = 1e-4
DEFAULT_SWAPS_PER_ITER = 16
_NOISE_FACTOR = 4.0  # noise_i = 4 ε (2 max_j s_j + √e_i)²
_DEFLATE = 16.0  # screening slack: 16 ε per term
_BYTES_PER_CANDIDATE = 400  # per staircase segment (one u × GROUP p's): indices, G entries, Δ
_BYTES_PER_ROW_ELEM = 160  # (rows × d) temporaries of one chunk (sorts, keys, counts)
_CANDIDATES_PER_SWAP = 2  # candidates offered to the greedy acceptance per swap allowed
_BYTES_PER_BLOCK_PAIR = 24  # block_swaps: pair terms, blocked flags, the selection temporaries per (row, p, u)
_BLOCK = 64  # candidate block per row for several swaps per iteration: 64 pruned × 64 kept indices
_GROUP = 4  # the staircase is enumerated in tiles of 4 consecutive p's (sorted by α)


# ---- memory -------------------------------------------------------------------------------------
def memory_cap_bytes(device: torch.device | str, fraction: float = 0.25) -> float:
    """A budget for temporaries: ``fraction`` of the memory free on ``device`` now.

    CUDA: ``torch.cuda.mem_get_info`` (free bytes); CPU: MemAvailable of /proc/meminfo, or psutil's
    ``virtual_memory().available`` where /proc is absent. Raises when neither is available (pass an
    explicit cap then).
    """
    device = torch.device(device)
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return fraction * free
    if device.type != "cpu":
        raise ValueError(f"no free-memory query for device {device}; pass mem_cap_mb explicitly")
    if os.path.exists("/proc/meminfo"):
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return fraction * int(line.split()[1]) * 1024
    try:
        import psutil  # noqa: PLC0415
    except ImportError:
        raise RuntimeError("cannot read the free memory (no /proc/meminfo, no psutil); pass mem_cap_mb") from None
    return fraction * psutil.virtual_memory().available


def _chunk_rows(bytes_per_row: int, mem_cap_bytes: float) -> int:
    """Rows per chunk so that the chunk's temporaries stay under the cap (at least one row)."""
    return max(1, int(mem_cap_bytes // max(1, bytes_per_row)))


# ---- the change of one swap ---------------------------------------------------------------------
def swap_costs(W: torch.Tensor, gd: torch.Tensor, C: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(a, b) of Δ(p, u) = a_p + b_u − 2 w_p w_u G_pu: a = W² diag(G) − 2 W ⊙ C, b = W² diag(G) + 2 W ⊙ C."""
    s2 = W * W * gd
    wc = 2 * W * C
    return s2 - wc, s2 + wc


def swap_delta(W: torch.Tensor, G: torch.Tensor, C: torch.Tensor, p: torch.Tensor, u: torch.Tensor,
               exact: bool = False) -> torch.Tensor:
    """Δ(p, u) per row for index tensors p, u of shape (rows,) (p pruned, u kept), in W's dtype
    (``exact``: the gathered G entries are converted to W's dtype first, e.g. float64 W and C with a
    float32 G, without a d × d copy)."""
    rows = torch.arange(W.shape[0], device=W.device)
    wp, wu = W[rows, p], W[rows, u]
    g = (lambda i, j: G[i, j].to(W.dtype)) if exact else (lambda i, j: G[i, j])  # noqa: E731
    return (wp * wp * g(p, p) - 2 * wp * C[rows, p] + wu * wu * g(u, u) + 2 * wu * C[rows, u]
            - 2 * wp * wu * g(p, u))


def pair_bound_factors(G: torch.Tensor) -> torch.Tensor:
    """h (d,) with |G_pu| ≤ h_p h_u for all p ≠ u: h_j = √(ρ_j D_j), ρ_j = max_{v≠j} |G_jv| / √(D_j D_v).

    D = diag(G) clamped to a tiny positive floor (a zero diagonal keeps the bound valid, only loose).
    Computed in float64 from the entries of G (symmetrized by max(|G_jv|, |G_vj|)) and rounded up by
    a few ulps of G's dtype, so the inequality holds for the stored G exactly.
    """
    G64 = G.to(torch.float64)
    A = torch.maximum(G64.abs(), G64.abs().T)
    dg = G64.diagonal()
    floor = max(float(dg.abs().max()) if dg.numel() else 0.0, 1e-300) * 1e-30
    D = dg.clamp_min(floor)
    sq = D.sqrt()
    ratio = A / sq[:, None] / sq[None, :]
    ratio.fill_diagonal_(0.0)
    rho = ratio.max(1).values if G.shape[0] > 1 else torch.zeros_like(D)
    h = (rho * D).sqrt() * (1 + 8 * torch.finfo(G.dtype).eps)
    return h.to(G.dtype)


# ---- exhaustive searches (reference) --------------------------------------------------------------
def best_swaps_per_row(W: torch.Tensor, G: torch.Tensor, C: torch.Tensor, mask: torch.Tensor, keep: int,
                       mem_cap_bytes: float = 256e6, block: int | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(Δ_best, p, u) per row over all pruned p × kept u of the row (each row keeps ``keep``): exhaustive.

    With ``block``, only pairs inside the same block of ``block`` consecutive inputs (cs256 tiles).
    Gathers the (d−k) × k block G[P_i, K_i] per row, in row chunks under the cap. Ties go to the
    smallest p, then the smallest u. Rows without a pair get Δ = +inf.
    """
    rows, d = W.shape
    A, B = swap_costs(W, G.diagonal(), C)
    order = torch.argsort(mask.to(torch.int8), dim=1, descending=True, stable=True)
    K, P = order[:, :keep], order[:, keep:]
    nk, np_ = keep, d - keep
    best = torch.full((rows,), float("inf"), dtype=W.dtype, device=W.device)
    bp = torch.zeros(rows, dtype=torch.long, device=W.device)
    bu = torch.zeros(rows, dtype=torch.long, device=W.device)
    if nk == 0 or np_ == 0:
        return best, bp, bu
    step = _chunk_rows(3 * nk * np_ * W.element_size(), mem_cap_bytes)
    for s in range(0, rows, step):
        Pi, Ki = P[s : s + step], K[s : s + step]
        w = W[s : s + step]
        wP, wK = w.gather(1, Pi), w.gather(1, Ki)
        delta = G[Pi[:, :, None], Ki[:, None, :]]  # (b, np, nk)
        delta.mul_(wP[:, :, None]).mul_(wK[:, None, :]).mul_(-2)
        delta.add_(A[s : s + step].gather(1, Pi)[:, :, None]).add_(B[s : s + step].gather(1, Ki)[:, None, :])
        if block is not None:
            delta.masked_fill_((Pi[:, :, None] // block) != (Ki[:, None, :] // block), float("inf"))
        val, idx = delta.reshape(delta.shape[0], -1).min(1)  # documented: index of the first minimum
        best[s : s + step] = val
        bp[s : s + step] = Pi.gather(1, (idx // nk)[:, None])[:, 0]
        bu[s : s + step] = Ki.gather(1, (idx % nk)[:, None])[:, 0]
    return best, bp, bu


def best_swaps_nm(W: torch.Tensor, G: torch.Tensor, C: torch.Tensor, mask: torch.Tensor, m: int,
                  mem_cap_bytes: float = 256e6, top: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(Δ, p, u) of shape (rows, top): the best pair of the ``top`` best blocks of ``m`` consecutive inputs.

    Exhaustive within every block (m² pairs, invalid ones at +inf); blocks are ranked by their best Δ
    (stable: ties to the lower block, and inside a block to the smaller p, then u). Column 0 is the
    row's best 1-swap. Pairs of different blocks share no index.
    """
    rows, d = W.shape
    nb = d // m
    top = min(top, nb)
    A, B = swap_costs(W, G.diagonal(), C)
    A = A.masked_fill(mask, float("inf"))
    B = B.masked_fill(~mask, float("inf"))
    blk = torch.arange(d, device=W.device).reshape(nb, m)
    Gb = G[blk[:, :, None], blk[:, None, :]]  # (nb, m, m) diagonal blocks
    best = torch.empty(rows, top, dtype=W.dtype, device=W.device)
    pp = torch.empty(rows, top, dtype=torch.long, device=W.device)
    uu = torch.empty(rows, top, dtype=torch.long, device=W.device)
    step = _chunk_rows(4 * nb * m * m * W.element_size(), mem_cap_bytes)
    for s in range(0, rows, step):
        w = W[s : s + step].reshape(-1, nb, m)
        delta = (w[:, :, :, None] * Gb[None]) * w[:, :, None, :] * -2  # (b, nb, m_p, m_u)
        delta.add_(A[s : s + step].reshape(-1, nb, m)[:, :, :, None]).add_(B[s : s + step].reshape(-1, nb, m)[:, :, None, :])
        val, idx = delta.reshape(-1, m * m).min(1)  # index of the first minimum inside the block
        val, idx = val.reshape(-1, nb), idx.reshape(-1, nb)
        order = torch.sort(val, dim=1, stable=True).indices[:, :top]
        best[s : s + step] = val.gather(1, order)
        rest = idx.gather(1, order)
        pp[s : s + step] = order * m + rest // m
        uu[s : s + step] = order * m + rest % m
    return best, pp, uu


# ---- screened exact search ----------------------------------------------------------------------------
@dataclass
class SearchStats:
    """Work counters of the screened search (pairs whose Δ was evaluated exactly, and all pairs)."""

    examined: int = 0
    total: int = 0

    def add(self, other: "SearchStats") -> None:
        self.examined += other.examined
        self.total += other.total


def screened_swaps_per_row(W: torch.Tensor, G: torch.Tensor, C: torch.Tensor, mask: torch.Tensor, keep: int,
                           h: torch.Tensor | None = None, tau: torch.Tensor | None = None, *, top: int = 1,
                           probe: int = 16, mem_cap_bytes: float = 256e6,
                           stats: SearchStats | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exact best 1-swaps per row by bound screening: (Δ, p, u), each of shape (rows, top).

    Column 0 is the exact minimizer of Δ over all (pruned p, kept u) pairs of the row (ties to the
    smallest p, then u, as in ``best_swaps_per_row``) whenever that minimum is ≤ ``tau`` (per row,
    default +inf: always); rows with no pair ≤ tau get Δ = +inf. Further columns are the next best
    pairs ≤ tau among those examined (the staircase and the ``probe`` × ``probe`` pairs of smallest α
    and β; every pair with Δ ≤ min(tau, best probe Δ) is examined), +inf padded.
    ``h``: ``pair_bound_factors(G)`` (computed if not given).
    """
    rows, d = W.shape
    dev, dt = W.device, W.dtype
    inf = float("inf")
    out_d = torch.full((rows, top), inf, dtype=dt, device=dev)
    out_p = torch.zeros(rows, top, dtype=torch.long, device=dev)
    out_u = torch.zeros(rows, top, dtype=torch.long, device=dev)
    nk, np_ = keep, d - keep
    if rows == 0 or nk == 0 or np_ == 0:
        return out_d, out_p, out_u
    if h is None:
        h = pair_bound_factors(G)
    if tau is None:
        tau = torch.full((rows,), inf, dtype=dt, device=dev)
    gd = G.diagonal()
    eps = torch.finfo(dt).eps
    q_p, q_u = min(probe, np_), min(probe, nk)
    Gflat = G.reshape(-1)
    step = _chunk_rows(_BYTES_PER_ROW_ELEM * d, mem_cap_bytes)
    max_cand = max(1, int(mem_cap_bytes // _BYTES_PER_CANDIDATE))
    st = SearchStats(total=rows * nk * np_)
    for s in range(0, rows, step):
        w, c, msk = W[s : s + step], C[s : s + step], mask[s : s + step]
        a, b = swap_costs(w, gd, c)
        sig2 = (w.abs() * h).square()
        al = a - sig2 - _DEFLATE * eps * (a.abs() + 2 * sig2)
        be = b - sig2 - _DEFLATE * eps * (b.abs() + 2 * sig2)
        # compact the pruned / kept columns of every row (each row has exactly np_ / nk), then sort
        cols = torch.arange(d, device=dev).expand(w.shape[0], -1)
        pa0, ub0 = cols[~msk].view(-1, np_), cols[msk].view(-1, nk)
        al_s, o = torch.sort(al[~msk].view(-1, np_), dim=1)
        pa = pa0.gather(1, o)
        be_s, o = torch.sort(be[msk].view(-1, nk), dim=1)
        ub = ub0.gather(1, o)
        # probe: exact Δ on the q_p × q_u pairs with the smallest α and β
        pp = pa[:, :q_p, None].expand(-1, q_p, q_u).reshape(w.shape[0], -1)
        uu = ub[:, None, :q_u].expand(-1, q_p, q_u).reshape(w.shape[0], -1)
        dprobe = _pair_delta(w, a, b, Gflat, d, pp, uu)
        t = torch.minimum(tau[s : s + step], dprobe.min(1).values)
        # candidates worth returning: Δ ≤ cut = min(tau, the top-th best probe Δ) (always ≥ the best Δ)
        cut = torch.minimum(tau[s : s + step], dprobe.kthvalue(min(top, q_p * q_u), dim=1).values)
        # staircase: for the j-th smallest α, the β's ≤ t − α_j (a prefix of the sorted β), enumerated
        # in groups of GROUP consecutive p's that share the prefix of their first (longest) member
        L = torch.searchsorted(be_s, (t[:, None] - al_s), right=True)  # (b, np)
        Lg = L[:, ::_GROUP]  # (b, ng)
        # probe pairs outside the enumerated tiles (inside ones are enumerated again below)
        jg = torch.arange(q_p, device=dev) // _GROUP
        outside = (torch.arange(q_u, device=dev)[None, None, :] >= Lg[:, jg, None]).reshape(w.shape[0], -1)
        probe_ok = outside & (dprobe <= cut[:, None])
        counts = Lg.sum(1).tolist()  # one host sync per chunk: sizes of the ragged candidate lists
        st.examined += _GROUP * sum(counts) + int(outside.sum())
        r0 = 0
        while r0 < w.shape[0]:  # sub-chunks of rows whose candidate lists fit the cap
            r1, n = r0, 0
            while r1 < w.shape[0] and (r1 == r0 or n + counts[r1] <= max_cand):
                n += counts[r1]
                r1 += 1
            ri, pi, ui, dv = _staircase(w[r0:r1], a[r0:r1], b[r0:r1], Gflat, d, Lg[r0:r1], pa[r0:r1],
                                        ub[r0:r1], n, cut[r0:r1])
            pr_r, pr_c = probe_ok[r0:r1].nonzero(as_tuple=True)
            ri = torch.cat([ri, pr_r])
            pi = torch.cat([pi, pp[r0:r1][pr_r, pr_c]])
            ui = torch.cat([ui, uu[r0:r1][pr_r, pr_c]])
            dv = torch.cat([dv, dprobe[r0:r1][pr_r, pr_c]])
            bd, bp, bu = _top_per_row(ri, pi, ui, dv, r1 - r0, top, d)
            out_d[s + r0 : s + r1], out_p[s + r0 : s + r1], out_u[s + r0 : s + r1] = bd, bp, bu
            r0 = r1
    if stats is not None:
        stats.add(st)
    return out_d, out_p, out_u


def _pair_delta(w: torch.Tensor, a: torch.Tensor, b: torch.Tensor, Gflat: torch.Tensor, d: int,
                p: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Δ for index tensors p, u of shape (rows, n); same operation order as the exhaustive search."""
    g = Gflat[p * d + u]
    return ((g * w.gather(1, p)) * w.gather(1, u) * -2 + a.gather(1, p)) + b.gather(1, u)


def _staircase(w: torch.Tensor, a: torch.Tensor, b: torch.Tensor, Gflat: torch.Tensor, d: int, Lg: torch.Tensor,
               pa: torch.Tensor, ub: torch.Tensor, n: int, cut: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Exact Δ on the tiles {(i, g, r, k): r < Lg[i, g], k < GROUP}, pairing p = pa[i, g·GROUP + k] with
    u = ub[i, r]; returns the (row, p, u, Δ) entries with Δ ≤ cut[row] (flat). ``n`` = Σ Lg.

    The u side is gathered once per (i, g, r) (flat position = list position + offset of the segment),
    the p side as contiguous rows of GROUP per segment; only G is gathered per pair.
    """
    nr, np_ = pa.shape
    nk = ub.shape[1]
    ng = Lg.shape[1]
    dev, dt = w.device, w.dtype
    pad = ng * _GROUP - np_
    wP, aP = w.gather(1, pa), a.gather(1, pa)
    if pad:
        pa = torch.cat([pa, pa[:, :1].expand(-1, pad)], 1)
        wP = torch.cat([wP, wP.new_zeros(nr, pad)], 1)
        aP = torch.cat([aP, aP.new_full((nr, pad), float("inf"))], 1)  # padded p's never qualify
    pa3 = pa.reshape(nr * ng, _GROUP)
    wP3, aP3, pd3 = wP.reshape(nr * ng, _GROUP), aP.reshape(nr * ng, _GROUP), pa3 * d
    flatL = Lg.reshape(-1)
    seg = torch.repeat_interleave(torch.arange(nr * ng, device=dev), flatL, output_size=n)
    rows_g = torch.arange(nr, device=dev).repeat_interleave(ng)
    off = rows_g * nk - (torch.cumsum(flatL, 0) - flatL)  # flat u position = list position + off[segment]
    uidx = torch.arange(n, device=dev).add_(off[seg])
    ui = ub.reshape(-1)[uidx]
    wK = w.gather(1, ub).reshape(-1)[uidx]
    bK = b.gather(1, ub).reshape(-1)[uidx]
    g = Gflat[pd3.index_select(0, seg).add_(ui[:, None])]  # (n, GROUP)
    dv = g.mul_(wP3.index_select(0, seg)).mul_(wK[:, None]).mul_(-2).add_(aP3.index_select(0, seg)).add_(bK[:, None])
    ci = cut[rows_g[seg]]
    e, k = (dv <= ci[:, None]).nonzero(as_tuple=True)
    sg = seg[e]
    return rows_g[sg], pa3[sg, k], ui[e], dv[e, k]


def _argmin_by(key: torch.Tensor, dv: torch.Tensor, other: torch.Tensor, size: int, fill: int) -> torch.Tensor:
    """Boolean: entry is the minimum of its ``key`` group by (Δ, then smallest ``other``)."""
    best = torch.full((size,), float("inf"), dtype=dv.dtype, device=dv.device).scatter_reduce_(0, key, dv, "amin")
    on = dv == best[key]
    lo = torch.full((size,), fill, dtype=other.dtype, device=dv.device)
    lo.scatter_reduce_(0, key[on], other[on], "amin")
    return on & (other == lo[key])


def _top_per_row(ri: torch.Tensor, pi: torch.Tensor, ui: torch.Tensor, dv: torch.Tensor, nr: int, top: int,
                 d: int, rounds: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row, up to ``top`` pairwise disjoint candidates of a flat list (every pair at most once), by Δ.

    Every p keeps its best u (ties: smaller u); then a few rounds of matching: a pair is taken when it
    is the best of its u (ties: smaller p); pairs touching a taken index leave. The row's best
    pair (ties: smaller p, then u) is taken in round one, so column 0 is the exact best of the list.
    Output sorted by (Δ, p, u), +inf padded.
    """
    dev = dv.device
    out_d = torch.full((nr, top), float("inf"), dtype=dv.dtype, device=dev)
    out_p = torch.zeros(nr, top, dtype=torch.long, device=dev)
    out_u = torch.zeros(nr, top, dtype=torch.long, device=dev)
    taken_r, taken_p, taken_u, taken_d = [], [], [], []
    if dv.numel():  # every p offers its best u only (the row's best pair survives this)
        on = _argmin_by(ri * d + pi, dv, ui, nr * d, d)
        ri, pi, ui, dv = ri[on], pi[on], ui[on], dv[on]
    for rnd in range(rounds if top > 1 else 1):
        if dv.numel() == 0:
            break
        rp, ru = ri * d + pi, ri * d + ui
        mutual = _argmin_by(ru, dv, pi, nr * d, d)
        taken_r.append(ri[mutual]), taken_p.append(pi[mutual]), taken_u.append(ui[mutual]), taken_d.append(dv[mutual])
        if rnd + 1 == rounds:
            break
        used = torch.zeros(nr * d, dtype=torch.bool, device=dev)
        used[rp[mutual]] = True
        used[ru[mutual]] = True
        stay = ~(used[rp] | used[ru])
        ri, pi, ui, dv = ri[stay], pi[stay], ui[stay], dv[stay]
    if not taken_d:
        return out_d, out_p, out_u
    ri, pi, ui, dv = torch.cat(taken_r), torch.cat(taken_p), torch.cat(taken_u), torch.cat(taken_d)
    key = (ri * d + pi) * d + ui
    key, o = torch.sort(key)  # by row, then p, then u
    dv, ri = dv[o], ri[o]
    o = torch.sort(dv, stable=True).indices  # by Δ, ties keep the (p, u) order
    o = o[torch.sort(ri[o], stable=True).indices]  # then group by row
    key, dv, ri = key[o], dv[o], ri[o]
    cnt = torch.bincount(ri, minlength=nr)
    start = torch.cumsum(cnt, 0) - cnt
    rank = torch.arange(ri.numel(), device=dev) - start[ri]
    sel = rank < top
    ri, rank, key, dv = ri[sel], rank[sel], key[sel], dv[sel]
    out_d[ri, rank] = dv
    out_p[ri, rank] = (key // d) % d
    out_u[ri, rank] = key % d
    return out_d, out_p, out_u


# ---- applying several swaps exactly ---------------------------------------------------------------
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


# ---- the local search -------------------------------------------------------------------------------------
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
    if not pattern.rowwise:
        raise ValueError("SparseSwaps needs a per-row or N:M pattern (swaps keep every row's count); "
                         "got 'unstructured'")
    if search not in ("screened", "exhaustive"):
        raise ValueError(f"search must be 'screened' or 'exhaustive', got {search!r}")
    if swaps_per_iter < 1:
        raise ValueError(f"swaps_per_iter must be ≥ 1, got {swaps_per_iter}")
    if tol < 0:
        raise ValueError(f"tol must be ≥ 0, got {tol}")
    if mem_cap_bytes is None:
        mem_cap_bytes = memory_cap_bytes(W.device)
    dt, dev = W.dtype, W.device
    G = G.to(dtype=dt, device=dev)
    mask = mask.clone().bool()
    rows, d = W.shape
    W64 = W.to(torch.float64)
    C64 = _exact_residual_gram(W64, G, mask, mem_cap_bytes)
    err = (residual(W64, mask) * C64).sum(1)
    err0 = err.clone()
    eps = torch.finfo(dt).eps
    smax = (W64.abs() * G.diagonal().to(torch.float64).clamp_min(0).sqrt()).max(1).values
    J = swaps_per_iter
    tile = TILE if pattern.kind == "cs256" else None  # cs256: swaps stay inside a tile (exhaustive, one per row)
    h = pair_bound_factors(G) if (pattern.kind != "nm" and (search == "screened" or J > 1)) else None
    n_cand = _CANDIDATES_PER_SWAP * J if J > 1 else 1  # N:M: candidates offered to accept_swaps
    block = max(_BLOCK, 2 * J) if J > 1 else 1
    swaps = torch.zeros(rows, dtype=torch.long, device=dev)
    converged = torch.zeros(rows, dtype=torch.bool, device=dev)
    stopped = torch.zeros(rows, dtype=torch.bool, device=dev)
    active = torch.arange(rows, device=dev)
    stats = SearchStats()
    it = 0
    limit = max_iter if max_iter is not None else float("inf")
    while active.numel() and it < limit:
        noise = _NOISE_FACTOR * eps * (2 * smax[active] + err[active].clamp_min(0).sqrt()).square()
        thresh = torch.maximum(noise, tol * err.sum() / rows)
        Wa, Ma, Ca = W[active], mask[active], C64[active].to(dt)
        tau = (-noise).to(dt)
        if pattern.kind == "nm":
            bd, bp, bu = best_swaps_nm(Wa, G, Ca, Ma, pattern.m, mem_cap_bytes, top=n_cand)
            npairs = active.numel() * (d // pattern.m) * pattern.n * (pattern.m - pattern.n)
            stats.add(SearchStats(npairs, npairs))
            valid = bd <= tau[:, None]
            acc, change, best64 = accept_swaps(W64[active], G, C64[active], bp, bu, valid, thresh, J)
            moved = acc.any(1)
            best64 = torch.where(valid[:, 0], best64, torch.full_like(best64, float("inf")))
            ia, ja = acc.nonzero(as_tuple=True)
            rows_a, pa, ua = active[ia], bp[ia, ja], bu[ia, ja]
        else:
            if search == "screened" and tile is None:
                bd, bp, bu = screened_swaps_per_row(Wa, G, Ca, Ma, keep, h, tau, probe=probe,
                                                    mem_cap_bytes=mem_cap_bytes, stats=stats)
            else:
                b0, p0, u0 = best_swaps_per_row(Wa, G, Ca, Ma, keep, mem_cap_bytes, block=tile)
                bd, bp, bu = b0[:, None], p0[:, None], u0[:, None]
                npairs = active.numel() * keep * (d - keep)
                stats.add(SearchStats(npairs, npairs))
            valid = bd <= tau[:, None]
            p0, u0 = bp[:, 0], bu[:, 0]
            best64 = swap_delta(W64[active], G, C64[active], p0, u0, exact=True)
            best64 = torch.where(valid[:, 0], best64, torch.full_like(best64, float("inf")))
            moved = best64 < -thresh
            mv = moved.nonzero()[:, 0]
            change = torch.zeros(active.numel(), dtype=torch.float64, device=dev)
            parts = []
            step = _chunk_rows(_BYTES_PER_BLOCK_PAIR * block * block, mem_cap_bytes)
            for s in range(0, mv.numel(), step):  # several swaps per row on a candidate block, row chunks
                m = mv[s : s + step]
                if J > 1 and tile is None:
                    P, U = _block_candidates(Wa[m], G, Ca[m], Ma[m], p0[m], u0[m], keep, block, h)
                else:
                    P, U = p0[m, None], u0[m, None]
                taken, ps, us, ds = block_swaps(W64[active[m]], G, C64[active[m]], P, U, thresh[m],
                                                J if tile is None else 1)
                change[m] = (ds * taken).sum(1)
                ia, ja = taken.nonzero(as_tuple=True)
                parts.append((active[m][ia], ps[ia, ja], us[ia, ja]))
            rows_a, pa, ua = (torch.cat(x) for x in zip(*parts)) if parts else (active[:0],) * 3
        # retire rows: no swap beyond the noise → converged; best swap under the tolerance → stopped early
        conv_now = ~moved & (best64 >= -noise)
        stop_now = ~moved & ~conv_now
        converged[active[conv_now]] = True
        stopped[active[stop_now]] = True
        if rows_a.numel():
            mask[rows_a, pa] = True
            mask[rows_a, ua] = False
            _update_residual_gram(C64, W64, G, rows_a, pa, ua)
            err[active] += change
            swaps.index_add_(0, rows_a, torch.ones_like(rows_a))
        active = active[moved]
        it += 1
        say(lambda: f"swap iteration {it}: {rows - active.numel()}/{rows} rows done")
    return SwapResult(mask, swaps, it, converged, stopped, err, err0, stats.examined,
                      stats.total)


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


__all__ = [
    "DEFAULT_SWAPS_PER_ITER", "DEFAULT_TOL", "SearchStats", "SwapResult", "accept_swaps", "best_swaps_nm",
    "best_swaps_per_row", "memory_cap_bytes", "pair_bound_factors", "screened_swaps_per_row",
    "swap_costs", "swap_delta", "swap_refine",
]
