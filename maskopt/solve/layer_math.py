"""The layer objective in one place (pure tensor functions; every solver imports from here).

For a linear layer with weight W (rows × d) and Gram matrix G = X Xᵀ (d × d), a (relaxed) mask
m ∈ [0, 1]^{rows×d} and optionally new kept weights Ŵ:

    residual        R = W − Ŵ ⊙ m              (Ŵ = W: R = W ⊙ (1 − m))
    per-row error   e_i = r_iᵀ G r_i            (= ‖w_i X − (ŵ_i ⊙ m_i) X‖², X never materialized)
    residual Gram   C = R G                     (row i: c_i = G r_i, half the gradient of e_i w.r.t. r_i)
    gradient        ∇_m L = −2 · W ⊙ C          (L = Σ_i e_i with Ŵ = W; ∂r_ij/∂m_ij = −w_ij)

``work_dtype`` is the single rule for the precision solvers compute in.
"""
from __future__ import annotations

import torch

DTYPE_CHOICES = ("auto", "float32", "float64")


def work_dtype(dtype: torch.dtype, choice: str = "auto") -> torch.dtype:
    """Working precision of a solver: 'auto' keeps float64 problems in float64 and computes everything
    else (float32, float16, bfloat16) in float32; 'float32' / 'float64' force one."""
    if choice == "auto":
        return torch.float64 if dtype == torch.float64 else torch.float32
    if choice == "float32":
        return torch.float32
    if choice == "float64":
        return torch.float64
    raise ValueError(f"unknown dtype {choice!r}; use one of {DTYPE_CHOICES}")


def residual(W: torch.Tensor, m: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """R = W − Ŵ ⊙ m (Ŵ = ``weight``, default W, so R = W ⊙ (1 − m)); in W's dtype."""
    m = m.to(W.dtype)
    if weight is None:
        return W * (1 - m)
    return W - weight.to(W.dtype) * m


def quad_form_rows(R: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """r_iᵀ G r_i for every row of R, shape (rows,)."""
    return ((R @ G) * R).sum(1)


def row_errors(W: torch.Tensor, G: torch.Tensor, m: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Per-row error e_i = r_iᵀ G r_i with R = W − Ŵ ⊙ m, computed in W's dtype (pass float64 for reporting)."""
    return quad_form_rows(residual(W, m, weight), G.to(W.dtype))


def row_errors_f64(W: torch.Tensor, G: torch.Tensor, m: torch.Tensor | None = None, weight: torch.Tensor | None = None,
                   block: int = 512) -> torch.Tensor:
    """:func:`row_errors` in float64 (m = None: the dense energy w_iᵀ G w_i) in blocks of ``block`` rows and columns
    of G: e_i = Σ_J (r_i G[:, J]) · r_i[J]. Never holds a float64 copy of G or of the whole residual, only one
    column block of G and one row block of R, so the report's errors cost no memory beyond the layer's own."""
    rows, d = W.shape
    out = torch.zeros(rows, dtype=torch.float64, device=W.device)
    for j in range(0, d, block):
        GJ = G[:, j : j + block].to(torch.float64)
        for i in range(0, rows, block):
            Ri = W[i : i + block].to(torch.float64)
            wi = None if weight is None else weight[i : i + block].to(torch.float64)
            if m is not None and m.dtype == torch.bool:
                mi = m[i : i + block]
                Ri = torch.where(mi, Ri - wi, Ri) if wi is not None else Ri.masked_fill(mi, 0.0)
            elif m is not None:  # a relaxed mask in [0, 1]
                Ri = residual(Ri, m[i : i + block], wi)
            out[i : i + block] += ((Ri @ GJ) * Ri[:, j : j + block]).sum(1)
    return out


def residual_gram(W: torch.Tensor, G: torch.Tensor, m: torch.Tensor, WG: torch.Tensor | None = None) -> torch.Tensor:
    """C = R G with R = W ⊙ (1 − m); pass WG = W G to save a matmul (C = WG − (W ⊙ m) G)."""
    if WG is None:
        return residual(W, m) @ G
    return WG - (W * m.to(W.dtype)) @ G


def grad_from_residual_gram(W: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """∇_m L = −2 · W ⊙ C, given C = R G."""
    return -2 * W * C


def value_from_residual_gram(W: torch.Tensor, m: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """Per-row L_i(m) = r_iᵀ c_i = Σ_j w_ij (1 − m_ij) c_ij, given C = R G."""
    return (W * (1 - m.to(W.dtype)) * C).sum(1)


