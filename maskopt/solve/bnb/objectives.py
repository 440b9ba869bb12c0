"""Convex objectives for the B&B: an exact quadratic and a generic (f, ∇f) pair."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass
class QuadraticObjective:
    """f(x) = xᵀAx + bᵀx + c with A symmetric PSD; exact line search γ* = ⟨g,d⟩ / (2 dᵀAd)."""

    A: np.ndarray
    b: np.ndarray
    c: float = 0.0

    def value(self, x: np.ndarray) -> float:
        return float(x @ (self.A @ x) + self.b @ x + self.c)

    def grad(self, x: np.ndarray) -> np.ndarray:
        return 2.0 * (self.A @ x) + self.b

    def line_search(self, x: np.ndarray, g: np.ndarray, direction: np.ndarray, gamma_max: float) -> float:
        slope = float(g @ direction)  # −φ'(0) for φ(γ) = f(x − γ d)
        if slope <= 0.0:
            return 0.0
        curv = 2.0 * float(direction @ (self.A @ direction))
        if curv <= 0.0:
            return gamma_max
        return min(gamma_max, slope / curv)


@dataclass
class FunctionObjective:
    """A convex f given as callables; line search by bisection on the monotone φ'(γ)."""

    f: Callable[[np.ndarray], float]
    df: Callable[[np.ndarray], np.ndarray]
    steps: int = 40

    def value(self, x: np.ndarray) -> float:
        return float(self.f(x))

    def grad(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.df(x), dtype=np.float64)

    def line_search(self, x: np.ndarray, g: np.ndarray, direction: np.ndarray, gamma_max: float) -> float:
        if float(g @ direction) <= 0.0:
            return 0.0
        deriv = lambda t: -float(self.grad(x - t * direction) @ direction)  # φ'(t), nondecreasing
        if deriv(gamma_max) <= 0.0:
            return gamma_max
        lo, hi = 0.0, gamma_max
        for _ in range(self.steps):
            mid = 0.5 * (lo + hi)
            if deriv(mid) > 0.0:
                hi = mid
            else:
                lo = mid
        return lo
