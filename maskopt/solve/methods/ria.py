"""RIA (relative importance and activations, Zhang et al. 2024).

S_ij = (|W_ij| / Σ_k |W_kj| + |W_ij| / Σ_k |W_ik|) · ‖x_j‖^a, a = 0.5 by default.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..problem import LayerProblem, Solution
from .registry import register


@register("ria")
@dataclass
class RIA:
    a: float = 0.5  # exponent of the activation norm ‖x_j‖^a in the score

    def solve(self, problem: LayerProblem) -> Solution:
        A = problem.W.abs()
        rel = A / A.sum(0, keepdim=True).clamp_min(1e-30) + A / A.sum(1, keepdim=True).clamp_min(1e-30)
        return Solution(problem.topk(rel * problem.input_norms.to(A.dtype)[None, :] ** self.a))
