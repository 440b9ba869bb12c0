"""A node of the branch-and-bound tree: bounds, a valid lower bound, a warm start."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..fw.active_set import ActiveSet


@dataclass(order=True)
class Node:
    """Ordered by (key, id) so a heap pops best-bound (or deepest) first."""

    key: tuple = field(compare=True)
    id: int = field(compare=True)
    lb: np.ndarray = field(compare=False)
    ub: np.ndarray = field(compare=False)
    bound: float = field(compare=False)  # valid lower bound on f over the node's integer points
    depth: int = field(compare=False, default=0)
    active: ActiveSet | None = field(compare=False, default=None)  # parent's atoms inside the box
    x_hint: np.ndarray | None = field(compare=False, default=None)  # parent's relaxed point
