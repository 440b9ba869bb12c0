"""Exact mask selection: branch-and-bound per row with Frank-Wolfe node relaxations.

Every row of a per-row / N:M problem is solved by maskopt.solve.bnb.mask.solve_rows with a
time limit; when the limit hits, the row keeps its incumbent and its certified gap.
Incumbents are seeded by the ``seed`` method (SparseSwaps when registered, else Wanda;
1-swap local search is applied on top). Rows not in ``rows`` keep the seed's mask.
``seed="none"`` runs no other method: each row starts from the B&B's own incumbents only (the
top-k of w_j²·G_jj, which minimises the diagonal part of the row error, improved by 1-swaps,
and every vertex of the node relaxations); rows not in ``rows`` then keep that top-k.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..problem import LayerProblem, Solution
from .registry import available, check_warm_start, get_method, register


@register("exact")
@dataclass
class Exact:
    time_limit: float = 10.0  # seconds per row
    node_limit: int = 1_000_000  # nodes per row
    rel_tol: float = 1e-6  # relative optimality tolerance
    rows: str = "all"  # "all", or comma-separated row indices / ranges ("0,5,10-20")
    seed: str | None = "auto"  # incumbent method: "auto" = sparseswaps if available else wanda; "none" = B&B's own
    max_d: int = 4096  # refuse wider layers unless rows are chosen (the exact path is for small problems)

    def validate(self) -> None:
        """Option values that can be checked before any model is loaded."""
        if self.time_limit <= 0 or self.node_limit < 1 or self.rel_tol < 0:
            raise ValueError("exact: time_limit must be > 0, node_limit ≥ 1 and rel_tol ≥ 0")
        if not (isinstance(self.rows, str) and self.rows.strip().lower() == "all"):
            try:  # the syntax and the order only; the range is checked per layer
                parse_rows(self.rows, None)
            except ValueError as e:
                raise ValueError(f"exact: rows must be 'all' or indices/ranges like '0,5,10-20' ({e}), "
                                 f"got {self.rows!r}") from None
        if self.seed not in (None, "auto", "none"):
            check_warm_start("exact", self.seed)

    def solve(self, problem: LayerProblem) -> Solution:
        from ..bnb.mask import solve_rows
        from ..bnb.tree import BnBConfig

        if not problem.pattern.rowwise:
            raise ValueError("method 'exact' needs a per-row or N:M pattern (unstructured couples all rows)")
        rows = parse_rows(self.rows, problem.rows)
        if self.rows == "all" and problem.d > self.max_d:
            raise ValueError(f"exact: d={problem.d} > max_d={self.max_d}; choose rows=... or raise max_d")
        seed_mask = self._seed(problem)
        cfg = BnBConfig(time_limit=self.time_limit, node_limit=self.node_limit, rel_tol=self.rel_tol)
        res = solve_rows(problem, rows, seed_mask=seed_mask, config=cfg)
        if seed_mask is None:  # the B&B's own start: top-k of the diagonal error w_j² G_jj
            W = problem.W.to(torch.float64)
            seed_mask = problem.topk(W * W * problem.G.diagonal().to(torch.float64).clamp_min(0))
        mask = seed_mask.detach().cpu().clone()
        mask[rows] = res.masks
        err, lb = float(res.errors.sum()), float(res.lower_bounds.sum())
        info = {
            "rows_solved": len(rows),
            "rows_optimal": res.n_optimal,
            "nodes": res.nodes,
            "rows_error": err,
            "rows_lower_bound": lb,
            "rows_gap": (err - lb) / err if err > 0 else 0.0,
            "mu": res.mu,
            "seed": self._seed_name(),
        }
        return Solution(mask.to(problem.W.device), None, info)

    def _seed_name(self) -> str:
        if self.seed is None or self.seed == "none":  # the registry turns the option string 'none' into None
            return "none"
        if self.seed == "auto":
            return "sparseswaps" if "sparseswaps" in available() else "wanda"
        return self.seed

    def _seed(self, problem: LayerProblem) -> torch.Tensor | None:
        """The seed method's mask, or None for seed="none" (no other method is run)."""
        name = self._seed_name()
        if name == "none":
            return None
        if name == "exact":
            raise ValueError("exact: seed='exact' would recurse; choose a heuristic method or 'none'")
        return get_method(name).solve(problem).mask


def parse_rows(spec: str | list[int] | None, n: int | None) -> list[int]:
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
                if int(a) > int(b):
                    raise ValueError(f"the range {part} is empty (write the smaller row first, e.g. {b}-{a})")
                out.update(range(int(a), int(b) + 1))
            else:
                out.add(int(part))
        out = sorted(out)
        if not out:
            raise ValueError("no rows selected")
    if n is None:
        return out
    bad = [i for i in out if not 0 <= i < n]
    if bad:
        raise ValueError(f"rows {bad} out of range 0..{n - 1}")
    return out
