"""Block-diagonal splitting bound (issue 25 candidate; measured in bench/certify_gap.py, not in the package).

A row's error on masks is f(z) = zᵀQz, Q = D_w G D_w, z the pruned indicator (Σz = p). With a block-diagonal
B (blocks J_k) such that Q − B ⪰ 0,

    f(z) = zᵀ(Q − B)z + Σ_k F_k(z_{J_k}),   F_k(z_J) = z_Jᵀ B_JJ z_J,

the first part convex, the second exact on binaries. The bound is the minimum of zᵀ(Q − B)z + φ over the convex
hull of the lifted vertices {(z, Σ_k F_k(z_k)) : z binary, Σz = p}; Frank-Wolfe gives a valid bound at every
iterate (convexity), and its linear oracle min ⟨g, v⟩ + Σ_k F_k(v_k) is exact: each block's best subset for every
count by enumeration (2^b subsets), then a min-plus dynamic program over the blocks for the total count p. Block
size 1 is the diagonal shift. B is one matrix per layer in the scaled inputs (C = diag(G)^{-½} G diag(G)^{-½},
B_w = D_a B_C D_a with a = w ⊙ diag(G)^{½}), so Q − B_w ⪰ 0 holds for every row once C − B_C ⪰ 0:

* ``schur``: B_C = κ·[blockdiag(C⁻¹)]⁻¹ (block k: the Schur complement of the other inputs, the block analogue of
  the inverse-diagonal shift), κ = λ_min(Rᵀ C R) with blockdiag(C⁻¹) = R Rᵀ;
* ``jacobi``: B_C = t·blockdiag(C), t = λ_min(blockdiag(C)^{-½} C blockdiag(C)^{-½}).

Blocks: greedy groups of b inputs by absolute partial correlation (entries of C⁻¹).
"""
from __future__ import annotations

import math

import torch

__all__ = ["block_groups", "block_split", "lifted_bound", "block_bound"]


def _scaled(G: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    dg = G.diagonal().clamp_min(1e-300)
    C = G / dg.sqrt()[:, None] / dg.sqrt()[None, :]
    return 0.5 * (C + C.T), dg.sqrt()


def block_groups(C: torch.Tensor, b: int) -> list[list[int]]:
    """Groups of ≤ b inputs: seed = the free input with the largest partial correlation, grown greedily."""
    d = C.shape[0]
    P = torch.linalg.inv(C + 1e-10 * torch.eye(d, dtype=C.dtype))
    s = P.diagonal().abs().sqrt()
    R = (P / s[:, None] / s[None, :]).abs()
    R.fill_diagonal_(0.0)
    free = torch.ones(d, dtype=torch.bool)
    groups: list[list[int]] = []
    while bool(free.any()):
        idx = free.nonzero().flatten()
        if len(idx) <= b:
            groups.append(idx.tolist())
            break
        g = [int(idx[int(R[idx][:, idx].max(1).values.argmax())])]
        free[g[0]] = False
        while len(g) < b:
            idx = free.nonzero().flatten()
            j = int(idx[int(R[g][:, idx].sum(0).argmax())])
            g.append(j)
            free[j] = False
        groups.append(g)
    return groups


def block_split(C: torch.Tensor, groups: list[list[int]], kind: str = "schur") -> tuple[torch.Tensor, float]:
    """(B_C, scale) with B_C block-diagonal over ``groups`` and C − B_C ⪰ 0 (checked by eigvalsh, with a margin)."""
    d = C.shape[0]
    src = torch.linalg.inv(C) if kind == "schur" else C
    K = torch.zeros_like(C)
    for g in groups:
        gi = torch.tensor(g)
        K[gi[:, None], gi[None, :]] = src[gi[:, None], gi[None, :]]
    R = torch.linalg.cholesky(K if kind == "schur" else torch.linalg.inv(K))  # both: B_C = scale · R⁻ᵀR⁻¹
    scale = float(torch.linalg.eigvalsh(R.T @ C @ R)[0]) * (1.0 - 1e-8)
    B = scale * torch.cholesky_inverse(R)
    B = 0.5 * (B + B.T)
    lam = float(torch.linalg.eigvalsh(C - B)[0])
    if lam < 0:  # rounding: shrink until certified
        B = B * (1.0 + 2.0 * lam / max(float(torch.linalg.eigvalsh(B)[-1]), 1e-300))
        if float(torch.linalg.eigvalsh(C - B)[0]) < 0:
            raise FloatingPointError("block_split: C − B not PSD")
    assert d == B.shape[0]
    return B, scale


def lifted_bound(W: torch.Tensor, G: torch.Tensor, p: int, groups: list[list[int]], Bc: torch.Tensor,
                 iters: int = 300, z0: torch.Tensor | None = None) -> torch.Tensor:
    """Per row of W: the best Frank-Wolfe dual bound on min_{binary z, Σz = p} f(z) over ``iters`` iterations."""
    W, G, Bc = W.double(), G.double(), Bc.double()
    rows, d = W.shape
    _, sg = _scaled(G)
    A = W * sg[None, :]
    K, bs = len(groups), max(len(g) for g in groups)
    gidx = torch.full((K, bs), d, dtype=torch.long)
    for k, g in enumerate(groups):
        gidx[k, :len(g)] = torch.tensor(g)
    valid = gidx < d
    E = torch.tensor([[(s >> j) & 1 for j in range(bs)] for s in range(2 ** bs)], dtype=torch.float64)
    pc = E.sum(1).long()
    Bpad = torch.zeros(K, bs, bs, dtype=torch.float64)
    for k, g in enumerate(groups):
        gi = torch.tensor(g)
        Bpad[k, :len(g), :len(g)] = Bc[gi[:, None], gi[None, :]]
    pad = torch.zeros(rows, 1, dtype=torch.float64)
    Ap = torch.cat([A, pad], 1)[:, gidx]  # rows × K × bs
    Y = E[None, None] * Ap[:, :, None, :]
    F = ((Y @ Bpad[None]) * Y).sum(-1)  # rows × K × 2^bs: F_k of every subset
    bad = (E[None] * (~valid)[:, None, :].double()).sum(-1) > 0
    F = F.masked_fill(bad[None], math.inf)
    flat = gidx.flatten()[None].expand(rows, -1)

    def Hz(Z: torch.Tensor) -> torch.Tensor:  # (Q − B_w) z per row
        Zp = torch.cat([Z, pad], 1)[:, gidx] * Ap
        out = (Zp[:, :, None, :] @ Bpad[None]).squeeze(2) * Ap
        res = torch.zeros(rows, d + 1, dtype=torch.float64).scatter_add_(1, flat, out.reshape(rows, -1))
        return (W * Z) @ G * W - res[:, :d]

    def lmo(g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        tot = F + torch.cat([g, pad], 1)[:, gidx] @ E.T
        T = torch.full((rows, K, bs + 1), math.inf, dtype=torch.float64)
        arg = torch.zeros((rows, K, bs + 1), dtype=torch.long)
        for c in range(bs + 1):
            sel = (pc == c).nonzero().flatten()
            v, a = tot[:, :, sel].min(-1)
            T[:, :, c], arg[:, :, c] = v, sel[a]
        V = torch.full((rows, p + 1), math.inf, dtype=torch.float64)
        V[:, 0] = 0.0
        choice = torch.zeros((rows, K, p + 1), dtype=torch.long)
        for k in range(K):
            cand = torch.full((rows, p + 1, bs + 1), math.inf, dtype=torch.float64)
            for c in range(min(bs, p) + 1):
                cand[:, c:, c] = V[:, :p + 1 - c] + T[:, k, c:c + 1]
            V, choice[:, k] = cand.min(-1)
        n = torch.full((rows,), p, dtype=torch.long)
        Z = torch.zeros(rows, d + 1, dtype=torch.float64)
        Fv = torch.zeros(rows, dtype=torch.float64)
        ar = torch.arange(rows)
        for k in reversed(range(K)):
            c = choice[ar, k, n]
            s = arg[ar, k, c]
            Z[ar[:, None], gidx[k][None, :].expand(rows, -1)] = E[s]
            Fv += F[ar, k, s]
            n = n - c
        return V[:, p], Z[:, :d], Fv

    if z0 is None:
        _, Z, phi = lmo(torch.zeros(rows, d, dtype=torch.float64))
    else:
        Z = z0.double()
        S = (torch.cat([Z, pad], 1)[:, gidx] * (2 ** torch.arange(bs))).sum(-1).long()
        phi = F.gather(2, S[..., None]).squeeze(-1).sum(1)
    best = torch.full((rows,), -math.inf, dtype=torch.float64)
    HZ = Hz(Z)
    for _ in range(iters):
        g = 2.0 * HZ
        val, V, Fv = lmo(g)
        best = torch.maximum(best, (Z * HZ).sum(1) + val - (g * Z).sum(1))  # h(Z, φ) + ⟨∇h, v − (Z, φ)⟩ at the best v
        Dz = V - Z
        HD = Hz(Dz)
        num = (g * Dz).sum(1) + (Fv - phi)
        gam = (-num / (2.0 * (Dz * HD).sum(1)).clamp_min(1e-300)).clamp(0.0, 1.0)
        Z, HZ, phi = Z + gam[:, None] * Dz, HZ + gam[:, None] * HD, phi + gam * (Fv - phi)
    return best


def block_bound(w, G, p: int, b: int, kind: str = "schur", iters: int = 300) -> float:
    """Bound of one row (numpy or torch inputs) with blocks of size b."""
    w = torch.as_tensor(w, dtype=torch.float64).reshape(1, -1)
    G = torch.as_tensor(G, dtype=torch.float64)
    C, _ = _scaled(G)
    groups = block_groups(C, b)
    Bc, _ = block_split(C, groups, kind)
    return float(lifted_bound(w, G, p, groups, Bc, iters)[0])
