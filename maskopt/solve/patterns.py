"""Sparsity patterns as constraint sets.

Every pattern splits a (rows × d) mask into disjoint *groups* that each keep the
same number of weights: one group for the whole matrix (unstructured), one per
row (per-row), or one per block of M consecutive inputs of a row (N:M).
Solvers work on the grouped view ``(n_groups, group_size)``; a top-k inside each
group is the linear minimization oracle and the rounding of every method.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch

KINDS = ("unstructured", "per_row", "nm")


class PatternError(ValueError):
    """A sparsity pattern or sparsity level that cannot be satisfied."""


@dataclass(frozen=True)
class Pattern:
    kind: str = "per_row"
    n: int = 0  # N:M keeps n of every m consecutive inputs
    m: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise PatternError(f"unknown pattern kind {self.kind!r}; expected one of {KINDS}")
        if self.kind == "nm" and not (0 < self.n < self.m):
            raise PatternError(f"N:M pattern needs 0 < N < M, got {self.n}:{self.m}")

    @staticmethod
    def parse(text: str | "Pattern") -> "Pattern":
        """'unstructured', 'per_row' (or 'per-row', 'row'), or 'N:M' such as '2:4'."""
        if isinstance(text, Pattern):
            return text
        t = str(text).strip().lower().replace("-", "_")
        if t in ("unstructured", "matrix", "layer"):
            return Pattern("unstructured")
        if t in ("per_row", "row", "perrow"):
            return Pattern("per_row")
        mt = re.fullmatch(r"(\d+)\s*:\s*(\d+)", t)
        if mt:
            return Pattern("nm", int(mt.group(1)), int(mt.group(2)))
        raise PatternError(
            f"invalid pattern {text!r}: use 'unstructured', 'per_row', or 'N:M' with 0 < N < M (e.g. 2:4, 4:8)"
        )

    def __str__(self) -> str:
        return f"{self.n}:{self.m}" if self.kind == "nm" else self.kind

    @property
    def rowwise(self) -> bool:
        """True when every row is an independent problem (per-row and N:M)."""
        return self.kind != "unstructured"

    # ---- shapes -----------------------------------------------------------------
    def group_shape(self, rows: int, d: int) -> tuple[int, int]:
        if self.kind == "unstructured":
            return 1, rows * d
        if self.kind == "per_row":
            return rows, d
        if d % self.m:
            raise PatternError(f"N:M pattern {self} needs the input dimension ({d}) divisible by {self.m}")
        return rows * (d // self.m), self.m

    def to_groups(self, x: torch.Tensor) -> torch.Tensor:
        """(rows, d) → (n_groups, group_size) view (no copy for contiguous x)."""
        return x.reshape(self.group_shape(*x.shape[-2:]))

    def from_groups(self, x: torch.Tensor, rows: int, d: int) -> torch.Tensor:
        return x.reshape(rows, d)

    def keep_per_group(self, rows: int, d: int, sparsity: float) -> int:
        """Number of weights each group keeps. Pruned count is ⌊sparsity·size⌋ (Wanda/SparseGPT convention)."""
        if self.kind == "nm":
            self.group_shape(rows, d)  # validates that M divides d
            return self.n
        check_sparsity(sparsity)
        _, size = self.group_shape(rows, d)
        return size - int(sparsity * size)

    def sparsity_of(self, rows: int, d: int, sparsity: float) -> float:
        """The actual fraction of zeros the pattern produces."""
        n_groups, size = self.group_shape(rows, d)
        return 1.0 - self.keep_per_group(rows, d, sparsity) / size

    # ---- oracles ------------------------------------------------------------------
    def topk_mask(self, scores: torch.Tensor, keep: int) -> torch.Tensor:
        """Boolean mask keeping the ``keep`` highest scores in every group.

        Ties are broken deterministically towards the lower index (stable sort),
        so equal scores (common on quantized weights) give the same mask on every run.
        """
        rows, d = scores.shape
        g = self.to_groups(scores)
        mask = torch.zeros_like(g, dtype=torch.bool)
        if keep > 0:
            idx = torch.argsort(g, dim=1, descending=True, stable=True)[:, :keep]
            mask.scatter_(1, idx, True)
        return self.from_groups(mask, rows, d)

    def counts_ok(self, mask: torch.Tensor, keep: int) -> bool:
        """True when every group of ``mask`` keeps exactly ``keep`` entries."""
        return bool((self.to_groups(mask.to(torch.int64)).sum(1) == keep).all())


def check_sparsity(sparsity: float) -> float:
    if not (isinstance(sparsity, (int, float)) and 0.0 <= float(sparsity) < 1.0) or sparsity != sparsity:
        raise PatternError(f"sparsity must be in [0, 1), got {sparsity!r}")
    return float(sparsity)
