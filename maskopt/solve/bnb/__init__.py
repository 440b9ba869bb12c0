"""Branch-and-bound with Frank-Wolfe node relaxations (the Boscia method).

Minimize a convex differentiable f over the integer points of a polytope seen only
through a linear minimization oracle (LMO) over conv(P ∩ Z) that respects node bounds.

* ``tree.BranchAndBound`` — the generic solver (any objective, any bounded LMO);
* ``lmo.MaskLMO`` — top-k oracle for cardinality / per-row / N:M masks (fast path);
* ``milp.HighsLMO`` — a MILP oracle on HiGHS for general linear constraints;
* ``mask.solve_row`` — one row of a pruning problem solved to proven optimality.
"""
from .objectives import FunctionObjective, QuadraticObjective
from .tree import BnBConfig, BnBResult, BranchAndBound

__all__ = ["BnBConfig", "BnBResult", "BranchAndBound", "FunctionObjective", "QuadraticObjective"]
