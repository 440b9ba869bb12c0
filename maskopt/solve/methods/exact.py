"""Exact mask selection: branch-and-bound per row with Frank-Wolfe node relaxations.

Every row of a per-row / N:M problem is solved by maskopt.bnb.mask.solve_row with a
time limit; when the limit hits, the row keeps its incumbent and its certified gap.
Incumbents are seeded by the ``seed`` method (SparseSwaps when registered, else Wanda;
1-swap local search is applied on top). Rows not in ``rows`` keep the seed's mask.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..problem import LayerProblem, Solution
from .registry import available, get_method, register


@register("exact")
@dataclass
class Exact:
    time_limit: float = 10.0  # seconds per row
    node_limit: int = 1_000_000  # nodes per row
    rel_tol: float = 1e-6  # relative optimality tolerance
    rows: str = "all"  # "all", or comma-separated row indices / ranges ("0,5,10-20")
    seed: str = "auto"  # incumbent method: "auto" = sparseswaps if available else wanda; "none"
    max_d: int = 4096  # refuse wider layers unless rows are chosen (the exact path is for small problems)

    def solve(self, problem: LayerProblem) -> Solution:
        from ..bnb.lmo import MaskLMO
        from ..bnb.mask import jacobi_shift, solve_row
        from ..bnb.tree import BnBConfig

        pat = problem.pattern
        if not pat.rowwise:
            raise ValueError("method 'exact' needs a per-row or N:M pattern (unstructured couples all rows)")
        rows = parse_rows(self.rows, problem.rows)
        if self.rows == "all" and problem.d > self.max_d:
            raise ValueError(f"exact: d={problem.d} > max_d={self.max_d}; choose rows=... or raise max_d")
        seed_mask = self._seed(problem)
        W = problem.W.detach().to(torch.float64).cpu().numpy()
        G = problem.G.detach().to(torch.float64).cpu().numpy()
        mask = seed_mask.detach().cpu().numpy().copy()
        lmo = MaskLMO.for_pattern(problem.d, pat.kind, problem.keep, pat.m, g=pat.g)
        cfg = BnBConfig(time_limit=self.time_limit, node_limit=self.node_limit, rel_tol=self.rel_tol)
        mu = jacobi_shift(G)
        errs, lbs, n_opt, nodes = [], [], 0, 0
        for i in rows:
            res = solve_row(W[i], G, lmo, config=cfg, seeds=[mask[i].astype(float)], mu=mu)
            mask[i] = res.mask
            errs.append(res.error)
            lbs.append(res.lower_bound)
            n_opt += res.status == "optimal"
            nodes += res.nodes
        err, lb = float(sum(errs)), float(sum(lbs))
        info = {
            "rows_solved": len(rows),
            "rows_optimal": n_opt,
            "nodes": nodes,
            "rows_error": err,
            "rows_lower_bound": lb,
            "rows_gap": (err - lb) / err if err > 0 else 0.0,
            "mu": mu,
        }
        out = torch.as_tensor(mask, dtype=torch.bool, device=problem.W.device)
        return Solution(out, None, info)

    def _seed(self, problem: LayerProblem) -> torch.Tensor:
        name = self.seed
        if name == "auto":
            name = "sparseswaps" if "sparseswaps" in available() else "wanda"
        if name == "none":
            name = "wanda"
        return get_method(name).solve(problem).mask


def parse_rows(spec: str | list[int] | None, n: int) -> list[int]:
    """'all' → 0..n−1; '0,5,10-20' → those rows (range inclusive); a list passes through."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() == "all"):
        return list(range(n))
    if not isinstance(spec, str):
        out = sorted({int(i) for i in spec})
    else:
        out = set()
        for part in spec.split(","):
            part = part.strip()
            if not part:
                continue
            if "-" in part:
                a, b = part.split("-", 1)
                out.update(range(int(a), int(b) + 1))
            else:
                out.add(int(part))
        out = sorted(out)
    bad = [i for i in out if not 0 <= i < n]
    if bad:
        raise ValueError(f"rows {bad} out of range 0..{n - 1}")
    return out
