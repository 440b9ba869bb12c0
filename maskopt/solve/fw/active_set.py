"""Active-set Frank-Wolfe: blended pairwise conditional gradients (BPCG).

Minimizes a convex f over P = conv(vertices returned by an LMO), keeping x as an
explicit convex combination x = Σ_a λ_a v_a (the active set). Each iteration either
moves weight from the worst atom to the best atom (a *local pairwise* step, no LMO
vertex needed) or takes a Frank-Wolfe step towards the LMO vertex w:

    local pairwise if ⟨g, a − s⟩ ≥ ⟨g, x − w⟩ (a = argmax_S ⟨g,·⟩, s = argmin_S ⟨g,·⟩), else FW.

The Frank-Wolfe gap γ(x) = ⟨g, x − w⟩ gives, for convex f, the valid lower bound
f* ≥ f(x) − γ(x) on the minimum over P. The solver is written for small dense
problems (the nodes of a branch-and-bound): numpy float64 on the CPU.

Used by maskopt.bnb for node relaxations, warm-started from the parent's active set.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np


class Objective(Protocol):
    """A convex differentiable function with an optional exact line search."""

    def value(self, x: np.ndarray) -> float: ...

    def grad(self, x: np.ndarray) -> np.ndarray: ...

    def line_search(self, x: np.ndarray, g: np.ndarray, direction: np.ndarray, gamma_max: float) -> float:
        """argmin_{γ∈[0,γmax]} f(x − γ·direction)."""
        ...


LMO = Callable[[np.ndarray], np.ndarray]


class LMOLimit(Exception):
    """The oracle stopped before proving its answer (time limit, iteration limit, numerical trouble).

    Neither the minimiser nor infeasibility is known, so the node must not be pruned on it.
    ``vertex``: an integer-feasible point it found (None if none); ``bound``: a valid lower bound
    on min ⟨g, v⟩ over the node's points (−inf when unknown). For convex f and any x this gives
    min f ≥ f(x) + bound − ⟨g, x⟩ with g = ∇f(x).
    """

    def __init__(self, message: str, vertex: np.ndarray | None = None, bound: float = -np.inf):
        super().__init__(message)
        self.vertex = vertex
        self.bound = float(bound)


@dataclass
class ActiveSet:
    """x = weightsᵀ atoms with weights ≥ 0 summing to one; atoms are vertices (rows)."""

    atoms: np.ndarray  # (n, d)
    weights: np.ndarray  # (n,)

    @staticmethod
    def vertex(v: np.ndarray) -> "ActiveSet":
        return ActiveSet(np.asarray(v, dtype=np.float64)[None, :].copy(), np.ones(1))

    @property
    def x(self) -> np.ndarray:
        return self.weights @ self.atoms

    def __len__(self) -> int:
        return len(self.weights)

    def restrict(self, lb: np.ndarray, ub: np.ndarray, tol: float = 1e-9) -> "ActiveSet | None":
        """The atoms inside the box [lb, ub], reweighted to sum to one (None if none is)."""
        ok = np.all((self.atoms >= lb - tol) & (self.atoms <= ub + tol), axis=1) & (self.weights > 0)
        if not ok.any():
            return None
        w = self.weights[ok]
        return ActiveSet(self.atoms[ok].copy(), w / w.sum())


@dataclass
class BPCGResult:
    x: np.ndarray
    value: float
    gap: float  # FW gap at x
    lower_bound: float  # best f(x_t) − gap_t over the run (valid bound on min_P f)
    grad: np.ndarray  # gradient at the returned x
    fw_vertex: np.ndarray | None  # LMO vertex for grad (None when the LMO stopped at a limit)
    active: ActiveSet
    iterations: int
    lmo_calls: int
    status: str  # "cutoff" | "converged" | "above_cutoff_loose" | "max_iter" | "lmo_limit"
    new_vertices: list[np.ndarray] = field(default_factory=list)


def bpcg(
    f: Objective,
    lmo: LMO,
    active: ActiveSet,
    *,
    max_iter: int = 1000,
    gap_tol: float = 1e-10,
    cutoff: float = np.inf,
    loose_gap_tol: float | None = None,
    on_vertex: Callable[[np.ndarray], float] | None = None,
) -> BPCGResult:
    """Run BPCG from ``active`` until one of:

    * the lower bound f(x) − gap reaches ``cutoff`` ("cutoff": the node cannot beat the incumbent),
    * gap ≤ ``gap_tol`` ("converged"),
    * f(x) < cutoff (the relaxation can no longer reach the cutoff) and gap ≤ ``loose_gap_tol``,
    * ``max_iter`` iterations,
    * the LMO raised ``LMOLimit`` ("lmo_limit": it could not answer; the bound then uses its
      dual bound, f(x) + bound − ⟨g, x⟩, or stays at the best so far when it has none).

    ``on_vertex(v)`` is called with every new LMO vertex (an integer-feasible point when the
    LMO works on the integer hull) and returns the possibly lowered cutoff.
    """
    atoms, lam = active.atoms.copy(), active.weights.copy()
    x = lam @ atoms
    best_lb = -np.inf
    new_vertices: list[np.ndarray] = []
    lmo_calls = 0
    status = "max_iter"
    it = 0
    g = f.grad(x)
    w: np.ndarray | None = None
    while True:
        fx = f.value(x)
        try:
            w = lmo(g)
        except LMOLimit as e:  # the oracle could not answer: stop, keeping only what is proven
            lmo_calls += 1
            if e.vertex is not None:
                new_vertices.append(e.vertex)
                if on_vertex is not None:
                    cutoff = min(cutoff, on_vertex(e.vertex))
            gap = max(float(g @ x) - e.bound, 0.0)  # inf when the oracle has no bound
            best_lb = max(best_lb, fx - gap)
            w = None
            status = "lmo_limit"
            break
        lmo_calls += 1
        gap = max(float(g @ (x - w)), 0.0)
        best_lb = max(best_lb, fx - gap)
        if best_lb >= cutoff:
            status = "cutoff"
            break
        if gap <= gap_tol:
            status = "converged"
            break
        if loose_gap_tol is not None and fx < cutoff and gap <= loose_gap_tol:
            status = "above_cutoff_loose"
            break
        if it >= max_iter:
            break
        it += 1
        scores = atoms @ g
        ia, is_ = int(np.argmax(scores)), int(np.argmin(scores))
        local_gap = float(scores[ia] - scores[is_])
        if local_gap >= gap and ia != is_:
            # local pairwise step: shift weight from atom a to atom s, x ← x − γ (a − s)
            direction = atoms[ia] - atoms[is_]
            gmax = float(lam[ia])
            gamma = f.line_search(x, g, direction, gmax)
            lam[is_] += gamma
            lam[ia] -= gamma
            if gamma >= gmax - 1e-15:
                keep = np.arange(len(lam)) != ia
                atoms, lam = atoms[keep], lam[keep]
                lam /= lam.sum()
                x = lam @ atoms
            else:
                x = x - gamma * direction
        else:
            # Frank-Wolfe step towards w: x ← x − γ (x − w)
            direction = x - w
            gamma = f.line_search(x, g, direction, 1.0)
            k = _find(atoms, w)
            if k < 0:
                new_vertices.append(w)
                if on_vertex is not None:
                    cutoff = min(cutoff, on_vertex(w))
                atoms = np.vstack([atoms, w[None, :]])
                lam = np.append(lam, 0.0)
                k = len(lam) - 1
            lam *= 1.0 - gamma
            lam[k] += gamma
            if gamma >= 1.0 - 1e-15:
                atoms, lam = atoms[k : k + 1], np.ones(1)
                x = w.copy()
            else:
                x = x - gamma * direction
            drop = lam <= 1e-14
            if drop.any():
                atoms, lam = atoms[~drop], lam[~drop]
                lam /= lam.sum()
                x = lam @ atoms
        g = f.grad(x)
    return BPCGResult(
        x=x,
        value=float(fx),
        gap=float(gap),
        lower_bound=float(best_lb),
        grad=g,
        fw_vertex=w,
        active=ActiveSet(atoms, lam),
        iterations=it,
        lmo_calls=lmo_calls,
        status=status,
        new_vertices=new_vertices,
    )


def _find(atoms: np.ndarray, v: np.ndarray) -> int:
    hit = np.flatnonzero(np.all(atoms == v, axis=1))
    return int(hit[0]) if len(hit) else -1
