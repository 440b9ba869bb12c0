"""Least squares on a fixed support, every row at once, by preconditioned conjugate gradients (pure functions).

Row i keeps the inputs S_i = {j : mask_ij}; its kept weights solve

    A_SS x_S = c_S,   x_j = 0 off S_i,

with one symmetric positive (semi)definite A (d × d) shared by all rows and a right-hand side c_i per row
(for the layer error A = G and c_i = G w_i). The masked operator x ↦ m ⊙ (A (m ⊙ x)) is A_SS on S and zero
elsewhere, so one matmul (rows × d) · (d × d) applies every row's own A_SS. Jacobi preconditioning with
diag(A); a row stops when ‖r_S‖ ≤ tol · ‖c_S‖. CG minimizes ½ xᵀ A_SS x − c_Sᵀ x over growing Krylov
spaces, so the objective never goes up from the starting point.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .progress import say


@dataclass
class PCGResult:
    X: torch.Tensor  # (rows, d) solution, zero off the support
    iterations: int  # CG iterations run (the slowest row's)
    converged: int  # rows whose relative residual reached tol
    max_relative_residual: float  # max over rows of ‖r_S‖ / ‖c_S‖ at the end


def masked_pcg(A: torch.Tensor, C: torch.Tensor, mask: torch.Tensor, X0: torch.Tensor | None = None, *,
               tol: float = 1e-6, max_iter: int = 100) -> PCGResult:
    """Solve A_{S_i S_i} x_i = c_{i,S_i} for every row i (S_i = mask[i]) by Jacobi-preconditioned CG.

    A: (d × d) symmetric PSD, C: (rows × d), mask: bool (rows × d), X0: start (default 0; taken on the
    support). Computes in A's dtype and device. Converged rows drop out of the matmuls.
    """
    dt = A.dtype
    M = mask.to(dt)
    C = C.to(dt)
    X = torch.zeros_like(C) if X0 is None else X0.to(dt) * M
    diag = A.diagonal()
    dinv = torch.where(diag > 0, 1.0 / diag.clamp_min(torch.finfo(dt).tiny), torch.ones_like(diag))[None, :]
    R = (C - X @ A) * M
    Z = R * dinv
    P = Z.clone()
    rz = (R * Z).sum(1)
    target = tol * (C * M).norm(dim=1)
    active = R.norm(dim=1) > target
    it = 0
    while it < max_iter and bool(active.any()):
        it += 1
        idx = active.nonzero().squeeze(1)
        all_rows = idx.numel() == X.shape[0]
        Pa = P if all_rows else P[idx]
        Ma = M if all_rows else M[idx]
        APa = (Pa @ A) * Ma
        pAp = (Pa * APa).sum(1)
        rza = rz if all_rows else rz[idx]
        alpha = torch.where(pAp > 0, rza / pAp.clamp_min(torch.finfo(dt).tiny), torch.zeros_like(pAp))
        Xa = (X if all_rows else X[idx]) + alpha[:, None] * Pa
        Ra = (R if all_rows else R[idx]) - alpha[:, None] * APa
        Za = Ra * dinv
        rz_new = (Ra * Za).sum(1)
        beta = torch.where(rza > 0, rz_new / rza.clamp_min(torch.finfo(dt).tiny), torch.zeros_like(rza))
        Pa = Za + beta[:, None] * Pa
        if all_rows:
            X, R, P, rz = Xa, Ra, Pa, rz_new
        else:
            X[idx], R[idx], P[idx], rz[idx] = Xa, Ra, Pa, rz_new
        done = (Ra.norm(dim=1) <= target[idx]) | (pAp <= 0)
        active[idx[done]] = False
        say(lambda: f"PCG iteration {it}, {int(active.sum())} rows left")
    rel = R.norm(dim=1) / (C * M).norm(dim=1).clamp_min(torch.finfo(dt).tiny)
    return PCGResult(X * M, it, int((R.norm(dim=1) <= target).sum()), float(rel.max()) if rel.numel() else 0.0)
