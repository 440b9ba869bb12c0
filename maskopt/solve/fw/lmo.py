"""Linear minimization oracles: the one protocol every oracle in maskopt follows, and the top-k oracle over the
mask polytope of a sparsity pattern.

The protocol (FrankWolfe.jl style): ``lmo(gradient, lb=None, ub=None) -> vertex`` = argmin ⟨gradient, v⟩ over the
feasible set, restricted to lb ≤ v ≤ ub where branch-and-bound fixes variables. Implementations: ``TopKLMO``
(masks of a layer, torch), ``bnb.lmo.MaskLMO`` / ``TileChunkLMO`` (one row of a B&B node, NumPy: the same oracle,
≈ 8× less overhead per call at d ≈ 48, where B&B makes most of its calls), ``bnb.milp.HighsLMO`` (any MILP), and
the regions of SFW training (``train.constraints``: k-support ball, k-sparse polytope, ℓ1, ℓ2; no bounds).

    C = {0 ≤ v ≤ 1, Σ_{j ∈ g} v_j = keep for every group g, v = 1 on fixed_one, v = 0 on fixed_zero}.

argmin_{v ∈ C} ⟨grad, v⟩ is a 0/1 vertex: in every group take the fixed ones, then the most
negative remaining gradient entries (deterministic on a given device). For cs256 (C is the convex
hull of the masks with k per row and a multiple of g per tile) the vertex is the chunk greedy
of maskopt.solve.patterns.tile_chunk_topk, exact for linear objectives.
"""
from __future__ import annotations

from typing import Any, Protocol

import torch

from ..patterns import Pattern, PatternError, tile_chunk_topk


class LMO(Protocol):
    """argmin_{v ∈ C, lb ≤ v ≤ ub} ⟨gradient, v⟩ (lb/ub None: no fixings)."""

    def __call__(self, gradient: Any, lb: Any = None, ub: Any = None) -> Any: ...


class InfeasibleBounds(PatternError):
    """The fixings leave some constraint group without a feasible point."""


class TopKLMO:
    """Top-k of −grad inside every constraint group, respecting fixed-one / fixed-zero bounds."""

    def __init__(
        self,
        pattern: Pattern | str,
        keep: int,
        fixed_one: torch.Tensor | None = None,
        fixed_zero: torch.Tensor | None = None,
    ):
        self.pattern = Pattern.parse(pattern)
        self.keep = int(keep)
        self.fixed_one = fixed_one.bool() if fixed_one is not None else None
        self.fixed_zero = fixed_zero.bool() if fixed_zero is not None else None
        self._checked_shape: tuple[int, int] | None = None
        ref = self.fixed_one if self.fixed_one is not None else self.fixed_zero
        if ref is not None:
            self.check(*ref.shape)

    def check(self, rows: int, d: int) -> None:
        """Raise InfeasibleBounds when some group cannot keep exactly ``keep`` entries."""
        n_groups, size = self.pattern.group_shape(rows, d)
        if not 0 <= self.keep <= size:
            raise InfeasibleBounds(f"keep={self.keep} does not fit groups of size {size}")
        ones = zeros = None
        for name, f in (("fixed_one", self.fixed_one), ("fixed_zero", self.fixed_zero)):
            if f is not None and tuple(f.shape) != (rows, d):
                raise ValueError(f"{name} has shape {tuple(f.shape)}, expected {(rows, d)}")
        if self.fixed_one is not None:
            ones = self.pattern.to_groups(self.fixed_one).sum(1)
            if bool((ones > self.keep).any()):
                g = int(torch.nonzero(ones > self.keep)[0, 0])
                raise InfeasibleBounds(f"group {g} fixes {int(ones[g])} entries to one but may keep only {self.keep}")
        if self.fixed_zero is not None:
            zeros = self.pattern.to_groups(self.fixed_zero).sum(1)
            if bool((size - zeros < self.keep).any()):
                g = int(torch.nonzero(size - zeros < self.keep)[0, 0])
                raise InfeasibleBounds(
                    f"group {g} fixes {int(zeros[g])} of {size} entries to zero but must keep {self.keep}")
        if self.fixed_one is not None and self.fixed_zero is not None:
            if bool((self.fixed_one & self.fixed_zero).any()):
                raise InfeasibleBounds("an entry is fixed both to one and to zero")
        if self.pattern.kind == "cs256" and (self.fixed_one is not None or self.fixed_zero is not None):
            self._checked_shape = (rows, d)
            self(torch.zeros(rows, d))  # the chunk greedy raises InfeasibleBounds when the fixings cannot fit
        self._checked_shape = (rows, d)

    def __call__(self, grad: torch.Tensor, lb: torch.Tensor | None = None, ub: torch.Tensor | None = None
                 ) -> torch.Tensor:
        """0/1 vertex v (dtype of grad) minimizing ⟨grad, v⟩ over C (and lb ≤ v ≤ ub when given: lb > ½ fixes
        an entry to one, ub < ½ to zero, on top of the fixings the oracle was built with)."""
        if lb is not None or ub is not None:
            one = (lb > 0.5) if lb is not None else None
            zero = (ub < 0.5) if ub is not None else None
            if self.fixed_one is not None:
                one = self.fixed_one if one is None else one | self.fixed_one
            if self.fixed_zero is not None:
                zero = self.fixed_zero if zero is None else zero | self.fixed_zero
            return TopKLMO(self.pattern, self.keep, one, zero)(grad)
        rows, d = grad.shape
        if self._checked_shape != (rows, d):
            self.check(rows, d)
        score = -grad
        if self.fixed_one is not None:
            score = score.masked_fill(self.fixed_one, float("inf"))
        if self.fixed_zero is not None:
            score = score.masked_fill(self.fixed_zero, float("-inf"))
        if self.pattern.kind == "cs256":
            try:
                return tile_chunk_topk(score, self.keep, self.pattern.g).to(grad.dtype)
            except PatternError as e:
                raise InfeasibleBounds(str(e)) from None
        g = self.pattern.to_groups(score)
        v = torch.zeros_like(g)
        if self.keep > 0:
            # torch.topk (partial selection) is ~3× faster than a full sort; ties are resolved
            # deterministically per device, and any tie resolution is an exact minimizer.
            v.scatter_(1, torch.topk(g, self.keep, dim=1, sorted=False).indices, 1.0)
        return self.pattern.from_groups(v, rows, d)
