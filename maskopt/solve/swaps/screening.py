"""The screened exact best-pair search per row: Δ(p, u) ≥ α_p + β_u (see the package docstring) bounds which
pairs can beat the probe's best, and only those are evaluated."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .pairs import _BYTES_PER_CANDIDATE, _BYTES_PER_ROW_ELEM, _DEFLATE, _GROUP, _chunk_rows, pair_bound_factors, swap_costs

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
    dev = w.device
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
