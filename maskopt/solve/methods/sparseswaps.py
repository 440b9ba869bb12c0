"""SparseSwaps: exact best-improvement 1-swap refinement of a warm-start mask (see maskopt.swaps).

Needs a per-row or N:M pattern (swaps keep the counts; N:M swaps stay inside a block of M).
The warm start is any registered method (Wanda by default; 'sparsefw', 'sparsegpt', 'ria', ...).
The result is 1-swap optimal when every row converged and never worse than the warm start.
Optional ``refit``: least-squares update of the kept weights (closed form from G), reported
separately from the mask effect.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from ..layer_math import work_dtype
from ..problem import LayerProblem, Solution
from ..swaps import swap_refine
from .registry import get_method, register


@register("sparseswaps")
@dataclass
class SparseSwaps:
    warm_start: str = "wanda"
    warm_options: dict[str, Any] = field(default_factory=dict)  # options of the warm-start method
    max_iter: int | None = 100  # None (or ≤ 0): until no improving swap exists
    rtol: float = 1e-10
    mem_cap_mb: float = 256.0
    refit: bool = False
    dtype: str = "auto"  # 'auto' (float64 if the problem is, else float32), 'float32', 'float64'

    def solve(self, problem: LayerProblem) -> Solution:
        if not problem.pattern.rowwise:
            raise ValueError("sparseswaps needs pattern 'per_row' or 'N:M'; unstructured masks "
                             "have no fixed per-row count to swap within")
        if self.warm_start == "sparseswaps":
            raise ValueError("sparseswaps cannot warm-start from itself")
        t0 = time.perf_counter()
        warm_options = dict(self.warm_options)
        if self.warm_start == "sparsefw":
            from .sparsefw import SWAP_WARM_ALPHA

            warm_options.setdefault("alpha", SWAP_WARM_ALPHA)
        warm = get_method(self.warm_start, **warm_options).solve(problem)
        t_warm = time.perf_counter() - t0
        warm_error = problem.error(warm.mask)
        dt = work_dtype(problem.dtype, self.dtype)
        W = problem.W.to(dt)
        G = problem.G.to(dtype=dt, device=W.device)
        max_iter = self.max_iter if self.max_iter is not None and self.max_iter > 0 else None
        res = swap_refine(W, G, warm.mask, problem.pattern, problem.keep, max_iter,
                          rtol=self.rtol, mem_cap_bytes=self.mem_cap_mb * 2**20)
        mask = res.mask
        error = problem.error(mask)
        if error > warm_error:  # rounding noise in low precision: never return worse than the warm start
            mask, error = warm.mask.clone(), warm_error
        info = {
            "warm_start": self.warm_start,
            "warm_error": warm_error,
            "error": error,
            "swaps": int(res.swaps.sum()),
            "iterations": res.iterations,
            "rows_converged": int(res.converged.sum()),
            "rows": problem.rows,
            "warm_seconds": t_warm,
            "swap_seconds": time.perf_counter() - t0 - t_warm,
        }
        for k in ("relaxed_value", "gap", "lower_bound", "rounded_error"):
            if k in warm.info:
                info[f"warm_{k}"] = warm.info[k]
        weight = None
        if self.refit:
            from ...recover.lstsq import layer_lstsq

            weight = layer_lstsq(problem.W, problem.G, mask).to(problem.dtype)
            info["refit_error"] = problem.error(mask, weight)
        return Solution(mask, weight, info)
