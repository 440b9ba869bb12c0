"""Frank-Wolfe over mask polytopes: objective, top-k LMO, step rules, the batched solver.

``active_set`` holds the blended pairwise (BPCG) variant used by branch-and-bound nodes.
"""
from .frank_wolfe import FWResult, frank_wolfe
from .lmo import InfeasibleBounds, TopKLMO
from .objective import quad_grad, quad_rows, residual_gram
from .steps import Agnostic, ExactLineSearch, get_step

__all__ = [
    "Agnostic", "ExactLineSearch", "FWResult", "InfeasibleBounds", "TopKLMO",
    "frank_wolfe", "get_step", "quad_grad", "quad_rows", "residual_gram",
]
