"""Magnitude pruning: keep the largest |w| in every constraint group."""
from __future__ import annotations

from dataclasses import dataclass

from ..problem import LayerProblem, Solution
from .registry import register


@register("magnitude")
@dataclass
class Magnitude:
    def solve(self, problem: LayerProblem) -> Solution:
        return Solution(problem.topk(problem.W.abs()))
