"""The layer objective on a (relaxed) mask m ∈ [0, 1]^{rows×d} and its gradient (pure tensor functions).

    L(m) = Σ_i r_iᵀ G r_i,   r_i = w_i ⊙ (1 − m_i),
    ∇L(m) = −2 · W ⊙ (W G − (W ⊙ m) G).

X is never materialized: everything is computed from G = X Xᵀ.
"""
from __future__ import annotations

import torch


def quad_rows(W: torch.Tensor, G: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Per-row value (w_i ⊙ (1 − m_i))ᵀ G (w_i ⊙ (1 − m_i)), shape (rows,)."""
    R = W * (1 - m.to(W.dtype))
    return ((R @ G) * R).sum(1)


def quad_grad(W: torch.Tensor, G: torch.Tensor, m: torch.Tensor, WG: torch.Tensor | None = None) -> torch.Tensor:
    """∇_m L = −2 · W ⊙ (WG − (W ⊙ m) G), shape (rows, d); pass WG = W @ G to save a matmul."""
    if WG is None:
        WG = W @ G
    return -2 * W * (WG - (W * m.to(W.dtype)) @ G)


def residual_gram(W: torch.Tensor, G: torch.Tensor, m: torch.Tensor, WG: torch.Tensor | None = None) -> torch.Tensor:
    """C = R G with R = W ⊙ (1 − m): row i is c_i = G r_i (the error gradient w.r.t. r_i, halved)."""
    if WG is None:
        WG = W @ G
    return WG - (W * m.to(W.dtype)) @ G
