"""Linear minimization oracles that respect the bounds of a B&B node.

An oracle returns argmin_v ⟨g, v⟩ over the integer-feasible points of the node
(lb ≤ v ≤ ub), i.e. a vertex of conv(P ∩ Z ∩ box). Optional ``child_deltas`` give, for
binary variables, the exact increase of min ⟨g, v⟩ when one variable is forced to 0 or
to 1; with the convexity bound f* ≥ f(x) + min_v ⟨g, v − x⟩ they bound every child
(used for dual fixing and child bounds).
"""
from __future__ import annotations

import numpy as np

from ..fw.active_set import LMOLimit
from ..fw.lmo import LMO

__all__ = ["Infeasible", "LMO", "LMOLimit", "MaskLMO", "TileChunkLMO"]


class Infeasible(Exception):
    """The node's bounds leave no integer-feasible point."""


class MaskLMO:
    """{v ∈ {0,1}^d : Σ_{j∈group} v_j = keep for every group} with fixings: a top-k per group.

    ``groups`` is an (n_groups, size) index array partitioning 0..d−1 (one row for
    per-row / cardinality, d/M rows of M for N:M).
    """

    def __init__(self, groups: np.ndarray, keep: int, pattern=None):
        self.groups = np.asarray(groups, dtype=np.int64)
        self.keep = int(keep)
        self.d = self.groups.size
        self.pattern = pattern  # the maskopt.solve.patterns.Pattern these groups come from (for 1-swaps)
        self._rows = np.arange(self.groups.shape[0])[:, None]

    @staticmethod
    def for_pattern(d: int, kind: str, keep: int, m: int = 0, g: int = 8) -> "MaskLMO | TileChunkLMO":
        from ..patterns import Pattern  # noqa: PLC0415

        if kind == "cs256":
            return TileChunkLMO(d, keep, g)
        if kind == "nm":
            return MaskLMO(np.arange(d).reshape(d // m, m), keep, Pattern("nm", n=keep, m=m))
        return MaskLMO(np.arange(d)[None, :], keep, Pattern("per_row"))

    def _scores(self, g: np.ndarray, lb: np.ndarray, ub: np.ndarray) -> np.ndarray:
        s = np.where(lb > 0.5, -np.inf, np.where(ub < 0.5, np.inf, g))
        return s[self.groups]

    def __call__(self, g: np.ndarray, lb: np.ndarray | None = None, ub: np.ndarray | None = None) -> np.ndarray:
        lb = np.zeros(self.d) if lb is None else lb
        ub = np.ones(self.d) if ub is None else ub
        S = self._scores(g, lb, ub)
        v = np.zeros(self.d)
        k = self.keep
        if k >= S.shape[1]:
            v[:] = 1.0
        elif k > 0:
            idx = np.argpartition(S, k - 1, axis=1)[:, :k] if k < S.shape[1] else None
            v[self.groups[self._rows, idx]] = 1.0
        return v

    def feasible(self, lb: np.ndarray, ub: np.ndarray) -> bool:
        ones = (lb > 0.5)[self.groups].sum(1)
        avail = (ub > 0.5)[self.groups].sum(1)
        return bool(np.all(ones <= self.keep) and np.all(avail >= self.keep))

    def child_deltas(self, g: np.ndarray, lb: np.ndarray, ub: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(Δ⁰, Δ¹): increase of min ⟨g, v⟩ when v_j is forced to 0 / to 1 (∞ if infeasible)."""
        S = self._scores(g, lb, ub)
        k, size = self.keep, S.shape[1]
        srt = np.sort(S, axis=1)
        s_in = srt[:, k - 1] if k > 0 else np.full(len(S), -np.inf)  # largest selected
        s_out = srt[:, k] if k < size else np.full(len(S), np.inf)  # smallest unselected
        gg = g[self.groups]
        with np.errstate(invalid="ignore"):
            sel = S <= s_in[:, None]
            d0 = np.where(sel, s_out[:, None] - gg, 0.0)
            d1 = np.where(sel, 0.0, gg - s_in[:, None])
        d0 = np.where(np.isnan(d0), np.inf, np.maximum(d0, 0.0))
        d1 = np.where(np.isnan(d1), np.inf, np.maximum(d1, 0.0))
        delta0, delta1 = np.empty(self.d), np.empty(self.d)
        delta0[self.groups.ravel()] = d0.ravel()
        delta1[self.groups.ravel()] = d1.ravel()
        return delta0, delta1


class TileChunkLMO:
    """cs256 masks of one row: ``keep`` in total, a multiple of g in every tile of 256 inputs.

    argmin ⟨g, v⟩ under fixings is the chunk greedy of maskopt.solve.patterns.tile_chunk_topk on −g
    with fixed ones at +∞ and fixed zeros at −∞ (exact: the per-tile value is concave in the count).
    ``groups`` gives each input its tile id (1-D), which is where 1-swaps must stay.
    """

    def __init__(self, d: int, keep: int, g: int):
        from ..patterns import TILE

        from ..patterns import Pattern  # noqa: PLC0415

        self.d, self.keep, self.g = int(d), int(keep), int(g)
        self.groups = np.arange(self.d) // TILE
        self.pattern = Pattern("cs256", g=self.g)

    def __call__(self, g: np.ndarray, lb: np.ndarray | None = None, ub: np.ndarray | None = None) -> np.ndarray:
        import torch

        lb = np.zeros(self.d) if lb is None else lb
        ub = np.ones(self.d) if ub is None else ub
        from ..patterns import PatternError, tile_chunk_topk

        s = np.where(lb > 0.5, np.inf, np.where(ub < 0.5, -np.inf, -np.asarray(g, dtype=np.float64)))
        try:
            v = tile_chunk_topk(torch.from_numpy(s)[None, :], self.keep, self.g)[0]
        except PatternError as e:
            raise Infeasible(str(e)) from None
        return v.numpy().astype(np.float64)

    def feasible(self, lb: np.ndarray, ub: np.ndarray) -> bool:
        try:
            self(np.zeros(self.d), lb, ub)
        except Infeasible:
            return False
        return True
