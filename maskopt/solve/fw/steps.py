"""Interchangeable Frank-Wolfe step-size rules (FrankWolfe.jl style).

A rule is called as ``rule(t, D, DG, RG, rowwise)`` with the direction D = W ⊙ (v − m),
DG = D G, RG = R G (R = W ⊙ (1 − m)) and returns γ of shape (rows, 1) (one value per
independent row) or (1, 1) (one for the whole matrix when it is one constraint set).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Agnostic:
    """γ_t = 2 / (t + 3) for the solver's step t = 0, 1, … (the 2/(k+2) rule counted from k = 1).

    Counting from k = 0 would give γ = 1 first and throw the warm start away (the first iterate would
    be the LMO vertex); from k = 1 the warm start keeps weight 1/3 after the first step. The rule is
    not monotone: only ``ExactLineSearch`` guarantees L(m_{t+1}) ≤ L(m_t).
    """

    def __call__(self, t: int, D: torch.Tensor, DG: torch.Tensor, RG: torch.Tensor, rowwise: bool) -> torch.Tensor:
        return torch.full((1, 1), 2.0 / (t + 3), dtype=D.dtype, device=D.device)


@dataclass
class ExactLineSearch:
    """argmin_{γ∈[0,1]} L(m + γ(v − m)) in closed form: γ* = clamp(Σ (RG)⊙D / Σ (DG)⊙D, 0, 1).

    Summed per row when rows are independent constraint sets, over the whole matrix otherwise.
    """

    def __call__(self, t: int, D: torch.Tensor, DG: torch.Tensor, RG: torch.Tensor, rowwise: bool) -> torch.Tensor:
        num = (RG * D).sum(1, keepdim=True)
        den = (DG * D).sum(1, keepdim=True)
        if not rowwise:
            num, den = num.sum(0, keepdim=True), den.sum(0, keepdim=True)
        gamma = torch.where(den > 0, num / den.clamp_min(torch.finfo(D.dtype).tiny), (num > 0).to(D.dtype))
        return gamma.clamp(0.0, 1.0)


def get_step(name: str | object):
    """'agnostic' / 'exact' (or 'line_search') → a rule; a rule object passes through."""
    if not isinstance(name, str):
        return name
    key = name.lower().replace("-", "_")
    if key in ("agnostic", "open_loop", "2/(t+2)"):
        return Agnostic()
    if key in ("exact", "line_search", "exact_line_search", "ls"):
        return ExactLineSearch()
    raise ValueError(f"unknown step rule {name!r}; use 'agnostic' or 'exact'")
