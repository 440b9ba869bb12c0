"""SparseFW: Frank-Wolfe on the relaxed mask, then top-k rounding.

    min L(m) = Σ_i (w_i ⊙ (1 − m_i))ᵀ G (w_i ⊙ (1 − m_i))  over  C = {0 ≤ m ≤ 1, Σ_group m = k}

(one group per matrix / row / N:M block). The ⌊α·k⌋ entries of every group with the highest
Wanda saliency are fixed to one and FW optimizes the rest of the budget, starting from the
Wanda mask. Rounding keeps the top-k of the relaxed m per group (ties → higher Wanda score).

Reported (per layer): ``relaxed_value`` L(m_T), ``gap`` the FW gap ⟨∇L(m_T), m_T − v⟩ over the
fixed polytope, ``lower_bound`` a certified lower bound on min over *all* masks, from the gap over
the full polytope C (m_T ∈ C): min_C L ≥ L(m_T) − max_{v∈C} ⟨∇L(m_T), m_T − v⟩, per row where
rows are independent; ``rounded_error`` the error of the returned mask.

Defaults (α = 0.75 alone, 0.25 as SparseSwaps' warm start; T = 200 with a stop at a relative FW gap ≤ 0.02;
exact line search) were chosen on SmolLM2 layer errors from calibration-text Grams: bench/alpha_smollm.py,
bench/results/alpha_smollm.md and bench/results/sparsefw_defaults.md.
"""
from __future__ import annotations

import time
from typing import Literal
from dataclasses import dataclass

import torch

from ..fw import TopKLMO, frank_wolfe, get_step
from ..layer_math import grad_from_residual_gram, residual_gram, value_from_residual_gram, work_dtype
from ..problem import LayerProblem, Solution
from .registry import register
from .wanda import wanda_scores

DEFAULT_ALPHA = 0.75
DEFAULT_ITERATIONS = 200
DEFAULT_RTOL = 0.02
SWAP_WARM_ALPHA = 0.25  # α when SparseFW warm-starts SparseSwaps (see the table above)


def round_topk(pattern, m: torch.Tensor, tiebreak: torch.Tensor, keep: int) -> torch.Tensor:
    """Top-``keep`` of m per group; equal m values are ordered by ``tiebreak`` (desc), then index."""
    rows, d = m.shape
    if pattern.kind == "cs256":  # chunk greedy on the rank of (m, tiebreak): a feasible rounding
        order = torch.argsort(tiebreak, dim=1, stable=True)
        order = order.gather(1, torch.argsort(m.gather(1, order), dim=1, stable=True))
        rank = torch.empty_like(m).scatter_(1, order, torch.arange(d, dtype=m.dtype, device=m.device).expand(rows, d))
        return pattern.topk_mask(rank, keep)
    gm, gt = pattern.to_groups(m), pattern.to_groups(tiebreak)
    first = torch.argsort(gt, dim=1, descending=True, stable=True)
    second = torch.argsort(gm.gather(1, first), dim=1, descending=True, stable=True)
    idx = first.gather(1, second)[:, :keep]
    out = torch.zeros_like(gm, dtype=torch.bool)
    out.scatter_(1, idx, True)
    return pattern.from_groups(out, rows, d)


@register("sparsefw")
@dataclass
class SparseFW:
    iterations: int = DEFAULT_ITERATIONS
    alpha: float = DEFAULT_ALPHA  # fraction of each group's budget fixed to the top Wanda scores
    step: Literal["exact", "agnostic"] = "exact"  # 'exact' (closed-form line search, monotone) or 'agnostic' (2/(t+3))
    rtol: float = DEFAULT_RTOL  # stop when the relative FW gap Σ gap / L(m) ≤ rtol (0: run all iterations)
    keep_best: bool = True  # return the warm start (Wanda) mask if rounding made it worse
    dtype: Literal["auto", "float32", "float64"] = "auto"  # 'auto' (float64 if the problem is, else float32)

    def validate(self) -> None:
        """Option values that can be checked before any model is loaded."""
        if not 0.0 <= self.alpha < 1.0:
            raise ValueError(f"sparsefw: alpha must be in [0, 1), got {self.alpha}")
        if self.iterations < 1 or self.rtol < 0:
            raise ValueError(f"sparsefw: iterations must be ≥ 1 and rtol ≥ 0, got {self.iterations}, {self.rtol}")

    def solve(self, problem: LayerProblem) -> Solution:
        if not 0.0 <= self.alpha < 1.0:
            raise ValueError(f"sparsefw: alpha must be in [0, 1), got {self.alpha}")
        t0 = time.perf_counter()
        dt = work_dtype(problem.dtype, self.dtype)
        pat, keep = problem.pattern, problem.keep
        W = problem.W.to(dt)
        G = problem.G.to(dtype=dt, device=W.device)
        scores = wanda_scores(problem).to(dt)
        m0 = pat.topk_mask(scores, keep)
        n_fixed = pat.round_keep(int(self.alpha * keep))
        fixed = pat.topk_mask(scores, n_fixed) if n_fixed > 0 else None
        lmo = TopKLMO(pat, keep, fixed_one=fixed)
        res = frank_wolfe(W, G, lmo, m0, self.iterations, get_step(self.step), rowwise=pat.rowwise,
                          rtol=self.rtol)
        # certified bound over the full polytope (no fixings): gap w.r.t. the unrestricted LMO
        RG = residual_gram(W, G, res.m)
        grad = grad_from_residual_gram(W, RG)
        value_rows = value_from_residual_gram(W, res.m, RG).double()
        v = TopKLMO(pat, keep)(grad)
        full_gap_rows = (grad * (res.m - v)).sum(1).double()
        if pat.rowwise:
            lower = float((value_rows - full_gap_rows).clamp_min(0).sum())
        else:
            lower = max(0.0, float(value_rows.sum() - full_gap_rows.sum()))
        mask = round_topk(pat, res.m, scores, keep)
        rounded = problem.error(mask)
        warm_error = problem.error(m0)
        used_warm = bool(self.keep_best and warm_error < rounded)
        if used_warm:
            mask = m0
        info = {
            "relaxed_value": float(value_rows.sum()),
            "gap": res.gap,
            "full_gap": float(full_gap_rows.sum()),
            "lower_bound": lower,
            "lower_bound_fixed": res.lower_bound,
            "rounded_error": rounded,
            "warm_error": warm_error,
            "error": min(rounded, warm_error) if self.keep_best else rounded,
            "used_warm_start": used_warm,
            "iterations": res.iterations,
            "alpha": self.alpha,
            "n_fixed_per_group": n_fixed,
            "seconds": time.perf_counter() - t0,
        }
        return Solution(mask, None, info)
