"""The change Δ(p, u) of one swap, the memory budget of the searches, and the exhaustive (reference) searches."""
from __future__ import annotations

import os

import torch

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
