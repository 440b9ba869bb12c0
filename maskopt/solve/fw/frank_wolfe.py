"""Batched Frank-Wolfe on the relaxed mask polytope, all rows of a matrix at once.

    min_{m ∈ C} L(m) = Σ_i (w_i ⊙ (1 − m_i))ᵀ G (w_i ⊙ (1 − m_i))

Iteration: g = ∇L(m), v = LMO(g), gap = ⟨g, m − v⟩ ≥ L(m) − L*, m ← m + γ (v − m).
Since L is convex, L(m_t) − gap_t is a certified lower bound on the relaxed optimum L* (per row
when rows are independent constraint sets, for the sum otherwise); we keep the best one seen.

State is P = (W ⊙ m) G, updated incrementally (P += γ D G) and recomputed every ``refresh``
iterations; memory is O(rows·d + d²): a handful of (rows × d) tensors plus G.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from ..layer_math import grad_from_residual_gram, residual_gram, value_from_residual_gram
from ..progress import say
from .steps import ExactLineSearch


@dataclass
class FWResult:
    m: torch.Tensor  # relaxed mask of the last iterate, (rows, d)
    value_rows: torch.Tensor  # L_i(m), (rows,)
    gap_rows: torch.Tensor  # ⟨∇L_i(m), m_i − v_i⟩ at the last iterate, (rows,)
    iterations: int
    bound_rows: torch.Tensor  # best certified lower bound per row, max_t (L_i(m_t) − gap_i,t)⁺ (rowwise only)
    lower_bound: float  # certified lower bound on min_C L (and hence on the best 0/1 mask's error)
    history: list[tuple[float, float]] = field(default_factory=list)  # (value, gap) per iteration, if asked

    @property
    def value(self) -> float:
        return float(self.value_rows.sum())

    @property
    def gap(self) -> float:
        return float(self.gap_rows.sum())


def frank_wolfe(
    W: torch.Tensor,
    G: torch.Tensor,
    lmo: Callable[[torch.Tensor], torch.Tensor],
    m0: torch.Tensor,
    iterations: int = 200,
    step: Callable | None = None,
    *,
    rowwise: bool = True,
    tol: float = 0.0,
    rtol: float = 0.0,
    WG: torch.Tensor | None = None,
    refresh: int = 64,
    history: bool = False,
) -> FWResult:
    """Run up to ``iterations`` FW steps from the feasible m0 (computation in W's dtype/device).

    ``rowwise``: rows are independent constraint sets (per-row / N:M) so line search and bounds
    are per row; False for one constraint set over the whole matrix (unstructured).
    Stops early when Σ gap ≤ max(tol, rtol · Σ L(m)) (checked only when tol or rtol > 0).
    """
    step = step if step is not None else ExactLineSearch()
    dtype, dev = W.dtype, W.device
    G = G.to(dtype=dtype, device=dev)
    WG = W @ G if WG is None else WG.to(dtype=dtype, device=dev)
    m = m0.to(dtype=dtype, device=dev).clone()
    P = WG - residual_gram(W, G, m, WG)  # (W ⊙ m) G
    best_rows = torch.zeros(W.shape[0], dtype=torch.float64, device=dev)
    best_total = torch.zeros((), dtype=torch.float64, device=dev)
    hist: list[tuple[float, float]] = []
    value_rows = gap_rows = None
    t = 0
    for t in range(iterations + 1):
        if t and t % refresh == 0:
            P = WG - residual_gram(W, G, m, WG)
        RG = WG - P  # rows of R G, R = W ⊙ (1 − m)
        grad = grad_from_residual_gram(W, RG)
        value_rows = value_from_residual_gram(W, m, RG)
        v = lmo(grad)
        gap_rows = (grad * (m - v)).sum(1)
        lb = value_rows.double() - gap_rows.double()
        best_rows = torch.maximum(best_rows, lb.clamp_min(0))
        best_total = torch.maximum(best_total, lb.sum())
        if history:
            hist.append((float(value_rows.sum()), float(gap_rows.sum())))
        if t == iterations:
            break
        if (tol > 0 or rtol > 0) and float(gap_rows.sum()) <= max(tol, rtol * float(value_rows.sum())):
            break  # (the host sync for this test only happens when a tolerance is set)
        D = W * (v - m)
        DG = D @ G
        gamma = step(t, D, DG, RG, rowwise)
        m.add_(gamma * (v - m))
        P.add_(gamma * DG)
        say(lambda: f"Frank-Wolfe iteration {t + 1}/{iterations}, relative gap "
                    f"{float(gap_rows.sum()) / max(float(value_rows.sum()), 1e-300):.3g}")
    lower = float(best_rows.sum()) if rowwise else max(float(best_total), 0.0)
    return FWResult(m, value_rows, gap_rows, t, best_rows, lower, hist)
