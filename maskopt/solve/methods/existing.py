"""The mask that exists already: the problem's ``warm_mask`` (the zeros of a model pruned elsewhere, completed to
the pattern's counts), as a method so that any warm-started method can start from it
(``--method sparseswaps --opt warm_start=existing``)."""
from __future__ import annotations

from dataclasses import dataclass

from ..problem import LayerProblem, Solution
from .registry import register


@register("existing")
@dataclass
class Existing:
    def solve(self, problem: LayerProblem) -> Solution:
        if problem.warm_mask is None:
            raise ValueError(f"{problem.name}: 'existing' needs a mask that exists already: prune a model pruned "
                             "elsewhere with its dense model (maskopt prune PRUNED --dense DENSE …)")
        mask = problem.warm_mask.to(problem.device).bool()
        if not problem.is_feasible(mask):
            raise ValueError(f"{problem.name}: the existing mask does not fit pattern {problem.pattern}")
        return Solution(mask, None, {"existing_kept": int(mask.sum())})
