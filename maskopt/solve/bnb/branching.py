"""Branching rules: pick an integer variable to split a node on."""
from __future__ import annotations

import numpy as np


def fractionality(x: np.ndarray, integer: np.ndarray) -> np.ndarray:
    """|x_j − round(x_j)| for integer variables, 0 for continuous ones."""
    return np.where(integer, np.abs(x - np.round(x)), 0.0)


def most_fractional(x: np.ndarray, integer: np.ndarray, lb: np.ndarray, ub: np.ndarray) -> int:
    """The free integer variable whose value is closest to ½ away from an integer (−1 if none free)."""
    free = integer & (ub > lb)
    if not free.any():
        return -1
    frac = np.where(free, fractionality(x, integer), -1.0)
    return int(np.argmax(frac))
