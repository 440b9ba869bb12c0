"""Wanda: keep the largest |w_ij|·‖x_j‖ in every group (‖x_j‖² = G_jj)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..problem import LayerProblem, Solution
from .registry import register


def wanda_scores(problem: LayerProblem) -> torch.Tensor:
    """S_ij = |W_ij| · ‖x_j‖."""
    return problem.W.abs() * problem.input_norms.to(problem.W.dtype)[None, :]


@register("wanda")
@dataclass
class Wanda:
    def solve(self, problem: LayerProblem) -> Solution:
        return Solution(problem.topk(wanda_scores(problem)))
