"""Frank-Wolfe over mask polytopes: top-k LMO, step rules, the batched solver (objective: ..layer_math).

``active_set`` holds the blended pairwise (BPCG) variant used by branch-and-bound nodes.
"""
from .frank_wolfe import FWResult, frank_wolfe
from .lmo import InfeasibleBounds, TopKLMO
from .steps import Agnostic, ExactLineSearch, get_step

__all__ = [
    "Agnostic", "ExactLineSearch", "FWResult", "InfeasibleBounds", "TopKLMO",
    "frank_wolfe", "get_step",
]
