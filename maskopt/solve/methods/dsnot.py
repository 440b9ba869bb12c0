"""DSnoT baseline (Zhang et al. 2024, "Dynamic Sparse No Training"): training-free prune-and-grow.

Starting from a mask (Wanda by default), every row repeatedly *grows* one pruned weight and
*prunes* one kept weight, chosen separately (not as the best pair, unlike SparseSwaps):

* grow p = the pruned weight whose revival reduces the row error most, i.e. the largest
  2 w_p c_p − w_p² G_pp > 0 with c = G r (the reconstruction-error sign rule: w_p c_p > 0);
* prune u = the kept weight with the smallest Wanda score |w_u|·‖x_u‖ among those whose
  removal does not increase the error to first order (sign rule w_u c'_u ≤ 0, c' after growing);
  for N:M, u is taken from p's block (for cs256 from p's tile);
* the pair is applied only if it lowers the row error; otherwise (or after ``max_cycles``) the row stops.

Deviation from the paper, stated plainly: DSnoT scores with the *expected* reconstruction error
Σ_j r_j E[x_j] and Var(x_j), which need the input mean. A LayerProblem carries only G = X Xᵀ, so
this version uses the exact second-moment analogue c = G r (the gradient of ‖r X‖² w.r.t. r / 2).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..layer_math import quad_form_rows, residual_gram, work_dtype
from ..problem import LayerProblem, Solution
from ..swaps import swap_delta
from .registry import check_warm_start, get_method, register


@register("dsnot")
@dataclass
class DSnoT:
    warm_start: str = "wanda"  # method whose mask DSnoT starts from
    max_cycles: int = 50  # prune-and-grow cycles per row at most
    rtol: float = 1e-10  # stop a row when its improvement is below rtol · its dense energy

    def validate(self) -> None:
        """Option values that can be checked before any model is loaded."""
        check_warm_start("dsnot", self.warm_start)
        if self.max_cycles < 0 or self.rtol < 0:
            raise ValueError("dsnot: max_cycles and rtol must be ≥ 0")

    def solve(self, problem: LayerProblem) -> Solution:
        pat = problem.pattern
        if not pat.rowwise:
            raise ValueError("dsnot needs pattern 'per_row' or 'N:M' (it swaps within rows)")
        dt = work_dtype(problem.dtype)
        W = problem.W.to(dt)
        G = problem.G.to(dtype=dt, device=W.device)
        warm = get_method(self.warm_start).solve(problem)
        mask = warm.mask.clone().bool()
        rows, d = W.shape
        gd = G.diagonal()
        wanda = W.abs() * gd.clamp_min(0).sqrt()
        C = residual_gram(W, G, mask)
        thresh = self.rtol * quad_form_rows(W, G).clamp_min(torch.finfo(dt).tiny)
        active = torch.arange(rows, device=W.device)
        cols = torch.arange(d, device=W.device)
        swaps = 0
        for _ in range(self.max_cycles):
            if not active.numel():
                break
            w, c, m = W[active], C[active], mask[active]
            gain = (2 * w * c - w * w * gd).masked_fill(m, float("-inf"))
            gmax, p = gain.max(1)
            wp = w.gather(1, p[:, None])[:, 0]
            c2 = c - wp[:, None] * G[p]
            cand = m & (w * c2 <= 0)
            same = pat.same_block(cols[None, :], p[:, None])
            if same is not None:  # N:M blocks / cs256 tiles: the swap stays inside p's block
                cand &= same
            score = wanda[active].masked_fill(~cand, float("inf"))
            smin, u = score.min(1)
            ok = (gmax > 0) & torch.isfinite(smin)
            delta = swap_delta(w, G, c, p, u)
            ok &= delta < -thresh[active]
            active, p, u = active[ok], p[ok], u[ok]
            if not active.numel():
                break
            mask[active, p] = True
            mask[active, u] = False
            C[active] += W[active, u][:, None] * G[u] - W[active, p][:, None] * G[p]
            swaps += int(active.numel())
        info = {"warm_error": problem.error(warm.mask), "error": problem.error(mask), "swaps": swaps}
        return Solution(mask, None, info)
