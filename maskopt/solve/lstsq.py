"""Closed-form least squares on the kept weights of every row (pure functions).

Fit rows ŵ_i (support S_i = kept entries of row i) to targets y_i ≈ ŵ_i X:

    min_ŵ ‖Y − Ŵ X‖²_F  ⇔  min Σ_i ŵ_iᵀ G ŵ_i − 2 ŵ_iᵀ b_i,   G = X Xᵀ,  B = Y Xᵀ,

solved per row by ŵ_{i,S} = (G_SS + λI)⁻¹ b_{i,S}, ŵ_{i,¬S} = 0. For the dense layer's own
outputs on the same inputs, B = W G and the objective is the layer error Σ_i r_iᵀ G r_i.
"""
from __future__ import annotations

import torch

from .layer_math import quad_form_rows


def row_objective(W: torch.Tensor, G: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """f_i(w_i) = w_iᵀ G w_i − 2 w_iᵀ b_i per row (float64); ‖y_i − w_i X‖² up to a constant."""
    W, G, B = W.double(), G.double(), B.double()
    return quad_form_rows(W, G) - 2 * (W * B).sum(1)


def masked_lstsq(
    G: torch.Tensor, B: torch.Tensor, mask: torch.Tensor, *, damp: float = 0.0,
    W0: torch.Tensor | None = None, chunk_elems: int = 2**22,
) -> torch.Tensor:
    """Per-row optimum of f_i on the support ``mask[i]`` (float64, zeros off the support).

    ``damp``: ridge λ = damp · mean(diag G). ``W0`` (optional, the current weights): a row is
    only replaced where its objective does not go up, so f never increases versus W0.
    Each row solves the k×k system G_SS + λI on its kept columns (rows with fewer than k = max
    kept count are padded with identity rows), in chunks of ``chunk_elems`` matrix entries.
    """
    rows, d = mask.shape
    if tuple(G.shape) != (d, d) or tuple(B.shape) != (rows, d):
        raise ValueError(f"shapes do not match: G {tuple(G.shape)}, B {tuple(B.shape)}, mask {tuple(mask.shape)}")
    G = G.double()
    B = B.double()
    lam = damp * float(G.diagonal().mean()) if damp > 0 else 0.0
    out = torch.zeros(rows, d, dtype=torch.float64, device=G.device)
    counts = mask.sum(1)
    k = int(counts.max()) if rows else 0
    if k == 0:
        return out
    # kept columns of every row first (padded to k): solve only the k×k systems G_SS (+ identity on padding)
    idx = torch.argsort(mask.to(torch.int8), dim=1, descending=True, stable=True)[:, :k]
    valid = (torch.arange(k, device=G.device)[None, :] < counts[:, None]).to(torch.float64)
    step = max(1, chunk_elems // (k * k))
    for s in range(0, rows, step):
        ii, vv = idx[s : s + step], valid[s : s + step]
        A = G[ii[:, :, None], ii[:, None, :]] * vv[:, :, None] * vv[:, None, :]
        A = A + torch.diag_embed((1 - vv) + lam * vv)
        rhs = (torch.gather(B[s : s + step], 1, ii) * vv)[:, :, None]
        L, info = torch.linalg.cholesky_ex(A)
        sol = torch.cholesky_solve(rhs, L)[:, :, 0]
        bad = info != 0
        if bad.any():  # singular G_SS without damping: minimum-norm solution
            sol[bad] = (torch.linalg.pinv(A[bad]) @ rhs[bad])[:, :, 0]
        out[s : s + step].scatter_(1, ii, sol * vv)
    m = mask.to(torch.float64)
    if W0 is not None:
        W0 = W0.double() * m
        worse = row_objective(out, G, B) > row_objective(W0, G, B)
        out[worse] = W0[worse]
    return out


def layer_lstsq(W: torch.Tensor, G: torch.Tensor, mask: torch.Tensor, *, damp: float = 0.0) -> torch.Tensor:
    """Kept weights that minimize the layer error Σ_i (w_i − ŵ_i)ᵀ G (w_i − ŵ_i) (B = W G)."""
    B = W.double() @ G.double()
    return masked_lstsq(G, B, mask, damp=damp, W0=W * mask).to(W.dtype)


def dense_target(W: torch.Tensor, G: torch.Tensor, C: torch.Tensor, *, damp: float = 0.01,
                 strength: float = 1.0) -> torch.Tensor:
    """The weights W' that turn the dense-target problem into the usual one (float64).

    With the pruned model's inputs X_p (G = X_p X_pᵀ) and the dense model's X_d (C = X_d X_pᵀ),
    ‖W X_d − Ŵ X_p‖²_F = ‖(W' − Ŵ) X_p‖²_F + const for every Ŵ when W' G = W C, i.e.
    W' = W + W (C − G) G⁻¹; G is ridged by λ = damp · mean(diag G) in the correction only, so that
    C = G (unchanged inputs) gives W' = W exactly. ``strength`` α scales the correction, W' = W + α W (C − G) G⁻¹,
    which is the optimum of the mixture (1 − α)‖(W − Ŵ) X_p‖² + α‖W X_d − Ŵ X_p‖² (up to a constant).
    """
    d = W.shape[1]
    if tuple(G.shape) != (d, d) or tuple(C.shape) != (d, d):
        raise ValueError(f"G and C must be {d}×{d}, got {tuple(G.shape)} and {tuple(C.shape)}")
    G64, C64, W64 = G.double(), C.double(), W.double()
    lam = damp * float(G64.diagonal().mean()) if damp > 0 else 0.0
    A = G64 + lam * torch.eye(d, dtype=torch.float64, device=G.device)
    L, info = torch.linalg.cholesky_ex(A)
    D = (C64 - G64).T @ W64.T  # (C − G)ᵀ Wᵀ
    if int(info) == 0:
        corr = torch.cholesky_solve(D, L)
    else:  # singular without damping: minimum-norm solution
        corr = torch.linalg.pinv(A, hermitian=True) @ D
    return W64 + strength * corr.T
