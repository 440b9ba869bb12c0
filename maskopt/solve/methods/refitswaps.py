"""Refit-aware swaps: 1-swaps of a warm-start mask, each priced with the optimal refit of the kept weights.

Every swap's exact change of the error after the least-squares update of the kept set S,
E(S) = w_Pᵀ (G_PP − G_PS G_SS⁻¹ G_SP) w_P, comes from rank-one updates (maskopt.solve.refit_swaps), so the mask is
optimized for the error the layer has with its refit weights, not for the mask alone (SparseSwaps).

Needs a pattern with the same count in every row (per_row, N:M, cs256). The warm start is any registered method
(ALPS by default). Returns the mask and its optimal kept weights; the error never exceeds the warm start's after
its own refit.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from ..problem import LayerProblem, Solution
from ..refit_swaps import refit_swap_refine
from .registry import check_warm_start, get_method, register


@register("refitswaps")
@dataclass
class RefitSwaps:
    warm_start: str = "alps"  # method whose mask the swaps start from
    warm_options: dict[str, Any] = field(default_factory=dict)  # options of the warm-start method
    max_iter: int | None = None  # most swaps per row; None (or < 0): until every row is 1-swap optimal or stopped by tol
    tol: float = 1e-5  # a row stops when its best swap lowers the error by less than tol · (mean refit error of the rows)
    damp: float = 0.0  # ridge λ = damp · mean diag G added to G (needed only for singular Grams)
    batch_rows: int = 64  # rows swapped together (each row's state: about 8 · (3k² + 2kd) bytes, k kept of d)
    probe: int = 16  # pruned inputs of largest bound priced against every kept slot per swap (the exact search: 4× per round)
    refresh: int = 64  # swaps between two rebuilds of the state from G
    mem_cap_mb: float = 2048  # fewer rows per batch where the batch's state would need more
    only: str = ""  # regular expression: swap only in layers whose name it matches (the others keep the warm start's solution)

    def __post_init__(self) -> None:
        self._warm = None  # the warm-start method, made once (ALPS keeps its eigendecompositions across layers)

    def validate(self) -> None:
        check_warm_start("refitswaps", self.warm_start, self.warm_options)
        if (self.tol < 0 or self.damp < 0 or self.batch_rows < 1 or self.refresh < 1 or self.probe < 1
                or self.mem_cap_mb <= 0):
            raise ValueError("refitswaps: tol and damp must be ≥ 0, batch_rows, probe and refresh ≥ 1, mem_cap_mb > 0")
        try:
            re.compile(self.only)
        except re.error as e:
            raise ValueError(f"refitswaps: only={self.only!r} is not a regular expression: {e}") from None

    def solve(self, problem: LayerProblem) -> Solution:
        if problem.pattern.kind == "unstructured":
            raise ValueError("refitswaps needs the same kept count in every row: pattern per_row, N:M or cs256")
        t0 = time.perf_counter()
        if self._warm is None:
            self._warm = get_method(self.warm_start, **self.warm_options)
        warm = self._warm.solve(problem)
        t_warm = time.perf_counter() - t0
        warm_error = problem.error(warm.mask, warm.weight)
        lam = self.damp * float(problem.G.diagonal().double().mean()) if self.damp > 0 else 0.0
        max_iter = self.max_iter if self.max_iter is not None and self.max_iter >= 0 else None
        if self.only and not re.search(self.only, problem.name):  # this layer keeps the warm start's solution
            return Solution(warm.mask, warm.weight, {"warm_start": self.warm_start, "warm_error": warm_error,
                                                     "swaps": 0, "skipped": True, "warm_seconds": t_warm})
        res = refit_swap_refine(problem.W, problem.G, warm.mask, problem.pattern, max_iter=max_iter, tol=self.tol,
                                damp=lam, refresh=self.refresh, batch_rows=self.batch_rows, probe=self.probe,
                                mem_cap_bytes=self.mem_cap_mb * 2**20)
        weight = res.weight.to(problem.dtype)
        error = problem.error(res.mask, weight)
        info = {
            "warm_start": self.warm_start,
            "warm_error": warm_error,
            "warm_refit_error": float(res.start_errors.sum()),
            "error": error,
            "tracked_error": float(res.errors.sum()),
            "swaps": int(res.swaps.sum()),
            "iterations": res.iterations,
            "rows_converged": int(res.converged.sum()),
            "pairs_priced": res.priced,
            "warm_seconds": t_warm,
            "swap_seconds": time.perf_counter() - t0 - t_warm,
        }
        return Solution(res.mask, weight, info)
