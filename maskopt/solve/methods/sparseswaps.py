"""SparseSwaps: exact best-improvement 1-swap refinement of a warm-start mask (see maskopt.solve.swaps).

Needs a per-row or N:M pattern (swaps keep the counts; N:M swaps stay inside a block of M).
The warm start is any registered method (Wanda by default; 'sparsefw', 'sparsegpt', 'ria', ...).
Every iteration finds each row's exact best 1-swap by bound screening (``search='screened'``; the
reference ``'exhaustive'`` evaluates every pair and gives the same pair), applies it, and then up to
``swaps_per_iter`` − 1 further disjoint improving swaps with exactly computed change (per-row: the
best pairs of a 64 × 64 candidate block, one after the other with c updated exactly in between). A row stops when it is
1-swap optimal (``rows_converged``) or when its best swap would lower the layer error by less than
``tol`` / rows of it (``rows_stopped_early``; ``tol = 0`` runs every row to 1-swap optimality).
The error never increases and is tracked exactly (float64). Optional ``refit``: least-squares update
of the kept weights (closed form from G), reported separately from the mask effect.

Defaults by measurement (SmolLM2-135M block 1 down_proj 576 × 1536, 50 % per row, Wanda start,
128 × 256 WikiText-2 tokens; error / Wanda's, wall time on the shared 2-core CPU under load):

    tol      0        1e-4     1e-3     1e-2
    error    0.5436   0.5443   0.5552   0.6876
    seconds  66       65       45       5

tol = 1e-4 costs 0.1 % of error; 1e-3 already 2 % (measured with the earlier greedy multi-swap).
``swaps_per_iter`` = 16 with the 64 × 64 candidate block: down_proj in 21 iterations (greedy disjoint
swaps, 8 per iteration: 61; 1 swap per iteration: 103) at the same error (0.5446 of Wanda's); 8 gave
0.5463 in 20 iterations. Throughput and block times: bench/results/swaps_speed.md.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

from ..layer_math import work_dtype
from ..problem import LayerProblem, Solution
from ..swaps import DEFAULT_SWAPS_PER_ITER, DEFAULT_TOL, memory_cap_bytes, swap_refine
from .registry import check_warm_start, get_method, register


@register("sparseswaps")
@dataclass
class SparseSwaps:
    warm_start: str = "wanda"
    warm_options: dict[str, Any] = field(default_factory=dict)  # options of the warm-start method
    max_iter: int | None = None  # None (or ≤ 0): until every row is 1-swap optimal or stopped by tol
    tol: float = DEFAULT_TOL  # a row stops when its best Δ > −tol · (layer error / rows)
    swaps_per_iter: int = DEFAULT_SWAPS_PER_ITER  # most disjoint improving swaps per row and iteration
    search: Literal["screened", "exhaustive"] = "screened"  # 'screened' (exact, bound screening) or 'exhaustive' (every pair)
    mem_cap_mb: float | None = None  # cap on temporaries; None: a quarter of the free device memory
    refit: bool = False  # least-squares update of the kept weights after the swaps (same as --refit)
    dtype: Literal["auto", "float32", "float64"] = "auto"  # 'auto' (float64 if the problem is, else float32)

    def validate(self) -> None:
        """Option values that can be checked before any model is loaded."""
        check_warm_start("sparseswaps", self.warm_start, self.warm_options)
        if self.tol < 0 or self.swaps_per_iter < 1 or (self.mem_cap_mb is not None and self.mem_cap_mb <= 0):
            raise ValueError("sparseswaps: tol must be ≥ 0, swaps_per_iter ≥ 1 and mem_cap_mb > 0")

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
        cap = self.mem_cap_mb * 2**20 if self.mem_cap_mb is not None else memory_cap_bytes(W.device)
        res = swap_refine(W, G, warm.mask, problem.pattern, problem.keep, max_iter, search=self.search,
                          swaps_per_iter=self.swaps_per_iter, tol=self.tol, mem_cap_bytes=cap)
        mask = res.mask
        error = problem.error(mask)
        tracked = float(res.errors.sum())
        scale = warm_error + problem.dense_energy()
        if error > warm_error + 1e-9 * scale or abs(error - tracked) > 1e-9 * scale:
            raise RuntimeError(f"{problem.name}: swap refinement lost track of the error (warm {warm_error}, "
                               f"tracked {tracked}, recomputed {error}); please report this")
        info = {
            "warm_start": self.warm_start,
            "warm_error": warm_error,
            "error": error,
            "swaps": int(res.swaps.sum()),
            "iterations": res.iterations,
            "rows": problem.rows,
            "rows_converged": int(res.converged.sum()),
            "rows_stopped_early": int(res.stopped_early.sum()),
            "rows_max_iter": problem.rows - int(res.converged.sum()) - int(res.stopped_early.sum()),
            "tol": self.tol,
            "search": self.search,
            "pairs_examined": res.pairs_examined,
            "pairs_total": res.pairs_total,
            "warm_seconds": t_warm,
            "swap_seconds": time.perf_counter() - t0 - t_warm,
        }
        for k in ("relaxed_value", "gap", "lower_bound", "rounded_error"):
            if k in warm.info:
                info[f"warm_{k}"] = warm.info[k]
        weight = None
        if self.refit:
            from ..lstsq import layer_lstsq

            weight = layer_lstsq(problem.W, problem.G, mask).to(problem.dtype)
            info["refit_error"] = problem.error(mask, weight)
        return Solution(mask, weight, info)
