"""Branch-and-bound over the integer points of a polytope, Frank-Wolfe node relaxations.

At a node with bounds lb ≤ x ≤ ub the relaxation min f over conv(P ∩ Z ∩ box) is solved
inexactly by BPCG (maskopt.fw.active_set), warm-started from the parent's active set.
For convex f every iterate gives the valid bound f* ≥ f(x) − gap(x); a node is pruned once
its bound reaches the incumbent minus the tolerance. Every LMO vertex is integer-feasible
and is tried as an incumbent. Anytime: time / node limits return the incumbent with the
global bound min(open bounds, tolerance-pruned bounds, incumbent).

An LMO that cannot answer (``LMOLimit``, e.g. a MILP oracle at its time limit) stops its node as
*unsolved*: the node keeps the best bound proven for it (its parent's, or the oracle's dual bound),
is never pruned on the failed call, counts in the final lower bound, and the run's status is then
"lmo_limit", never "optimal" or "infeasible".
"""
from __future__ import annotations

import heapq
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..fw.active_set import ActiveSet, Objective, bpcg
from .branching import fractionality, most_fractional
from .lmo import LMO, Infeasible, LMOLimit
from .node import Node


@dataclass
class BnBConfig:
    time_limit: float = math.inf  # seconds
    node_limit: int = 1_000_000
    rel_tol: float = 1e-6  # prune when bound ≥ incumbent − max(abs_tol, rel_tol·|incumbent|)
    abs_tol: float = 1e-12
    root_iter: int = 2000  # FW iterations at the root
    node_iter: int = 300  # FW iterations per node
    loose_gap: float = 1e-2  # stop a node early once f(x) < cutoff and gap ≤ loose_gap·(cutoff − bound)
    selection: str = "best"  # "best" (best-bound) | "depth_then_best" (dive until an incumbent exists)
    dual_fixing: bool = True  # fix binaries whose forced flip provably cannot beat the incumbent
    int_tol: float = 1e-6


@dataclass
class BnBResult:
    x: np.ndarray | None  # best integer-feasible point (None if none was found)
    value: float  # its objective value (inf if none)
    lower_bound: float  # certified lower bound on the optimum
    status: str  # "optimal" | "time_limit" | "node_limit" | "infeasible" | "lmo_limit"
    nodes: int
    iterations: int  # FW iterations over all nodes
    lmo_calls: int
    time: float
    root_bound: float
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def gap(self) -> float:
        return relative_gap(self.value, self.lower_bound)


def relative_gap(value: float, lower_bound: float) -> float:
    """(value − lower_bound)⁺ / value: 0 when proven optimal, and at value 0 (the errors here are ≥ 0, so a zero
    error is optimal); ∞ without a finite value."""
    if not math.isfinite(value):
        return math.inf
    return max(value - lower_bound, 0.0) / abs(value) if value != 0 else 0.0


class BranchAndBound:
    """minimize f(x) over {x ∈ P ∩ Z-for-integer-coords}, P given by ``lmo`` with node bounds."""

    def __init__(
        self,
        f: Objective,
        lmo: LMO,
        lb: np.ndarray,
        ub: np.ndarray,
        integer: np.ndarray | None = None,
        config: BnBConfig | None = None,
    ):
        self.f, self.lmo = f, lmo
        self.lb0 = np.asarray(lb, dtype=np.float64)
        self.ub0 = np.asarray(ub, dtype=np.float64)
        self.integer = np.ones(len(self.lb0), bool) if integer is None else np.asarray(integer, bool)
        self.cfg = config or BnBConfig()
        self.best_x: np.ndarray | None = None
        self.best_value = math.inf
        self._pruned_min = math.inf  # smallest bound among nodes pruned within the tolerance
        self._unsolved_min = math.inf  # smallest bound among nodes stopped by an LMOLimit
        self.unsolved = 0
        self._ids = 0
        self.iterations = self.lmo_calls = self.nodes = 0
        self.incumbent_updates = 0
        self._diving = self.cfg.selection == "depth_then_best"
        self._root_bound = -math.inf

    # ---- incumbents ---------------------------------------------------------------------
    def offer(self, x: np.ndarray, value: float | None = None) -> float:
        """Try an integer-feasible point as incumbent; returns the current cutoff."""
        v = self.f.value(x) if value is None else value
        if v < self.best_value:
            self.best_value, self.best_x = v, np.array(x, dtype=np.float64)
            self.incumbent_updates += 1
        return self.cutoff

    @property
    def tol(self) -> float:
        if not math.isfinite(self.best_value):
            return self.cfg.abs_tol
        return max(self.cfg.abs_tol, self.cfg.rel_tol * abs(self.best_value))

    @property
    def cutoff(self) -> float:
        return self.best_value - self.tol

    # ---- the tree -----------------------------------------------------------------------
    def _key(self, bound: float, depth: int) -> tuple:
        return (-depth, bound) if self._diving else (bound, -depth)

    def _push(self, heap: list, node: Node) -> None:
        heapq.heappush(heap, node)

    def _prune(self, bound: float) -> bool:
        if bound >= self.cutoff:
            self._pruned_min = min(self._pruned_min, bound)
            return True
        return False

    def _stop_unsolved(self, bound: float) -> list[Node]:
        """The LMO could not answer at a node: keep its proven bound unless it prunes anyway."""
        if not self._prune(bound):
            self.unsolved += 1
            self._unsolved_min = min(self._unsolved_min, bound)
        return []

    def solve(self) -> BnBResult:
        cfg = self.cfg
        t0 = time.perf_counter()
        lmo = self.lmo
        if not lmo.feasible(self.lb0, self.ub0):
            return BnBResult(None, math.inf, math.inf, "infeasible", 0, 0, 0, 0.0, math.inf)
        heap: list[Node] = []
        root = Node(self._key(-math.inf, 0), self._next_id(), self.lb0.copy(), self.ub0.copy(), -math.inf, 0)
        self._push(heap, root)
        root_bound = -math.inf
        status = "optimal"
        while heap:
            if self.nodes >= cfg.node_limit:
                status = "node_limit"
                break
            if time.perf_counter() - t0 > cfg.time_limit:
                status = "time_limit"
                break
            node = heapq.heappop(heap)
            if self._prune(node.bound):
                continue
            self.nodes += 1
            children = self._process(node)
            if node.depth == 0:
                root_bound = self._root_bound
            for child in children:
                self._push(heap, child)
            if self._diving and math.isfinite(self.best_value):  # first incumbent: switch to best-bound
                self._diving = False
                heap = [Node(self._key(n.bound, n.depth), n.id, n.lb, n.ub, n.bound, n.depth, n.active, n.x_hint) for n in heap]
                heapq.heapify(heap)
        open_min = min((n.bound for n in heap), default=math.inf)
        lower = min(open_min, self._pruned_min, self._unsolved_min, self.best_value)
        if self.unsolved and status == "optimal":
            status = "lmo_limit"
        elif not heap and self.best_x is None:
            status = "infeasible"
        return BnBResult(
            x=self.best_x,
            value=self.best_value,
            lower_bound=float(lower),
            status=status,
            nodes=self.nodes,
            iterations=self.iterations,
            lmo_calls=self.lmo_calls,
            time=time.perf_counter() - t0,
            root_bound=float(root_bound),
            info={"open_nodes": len(heap), "incumbent_updates": self.incumbent_updates, "unsolved_nodes": self.unsolved},
        )

    def _next_id(self) -> int:
        self._ids += 1
        return self._ids

    def _process(self, node: Node) -> list[Node]:
        """Solve the node relaxation, update incumbents, fix, and branch."""
        cfg, f = self.cfg, self.f
        lb, ub = node.lb, node.ub
        lmo = lambda g: self.lmo(g, lb, ub)
        active = node.active
        if active is None:
            hint = node.x_hint if node.x_hint is not None else 0.5 * (np.clip(lb, -1e6, 1e6) + np.clip(ub, -1e6, 1e6))
            hint = np.clip(hint, lb, ub)
            g0 = f.grad(hint)
            try:
                v = lmo(g0)
            except Infeasible:
                return []
            except LMOLimit as e:
                self.lmo_calls += 1
                if e.vertex is not None:
                    self.offer(e.vertex)
                return self._stop_unsolved(max(node.bound, f.value(hint) + e.bound - float(g0 @ hint)))
            self.lmo_calls += 1
            self.offer(v)
            active = ActiveSet.vertex(v)
        is_root = node.depth == 0
        res = bpcg(
            f,
            lmo,
            active,
            max_iter=cfg.root_iter if is_root else cfg.node_iter,
            gap_tol=self.tol * 0.5,
            cutoff=self.cutoff,
            loose_gap_tol=None if is_root else self._loose(node),
            on_vertex=self.offer,
        )
        self.iterations += res.iterations
        self.lmo_calls += res.lmo_calls
        bound = max(node.bound, res.lower_bound)
        if is_root:
            self._root_bound = bound
        if res.status == "lmo_limit":
            return self._stop_unsolved(bound)
        if self._prune(bound):
            return []
        x = res.x
        frac = fractionality(x, self.integer)
        if np.all(frac <= cfg.int_tol):
            xi = np.where(self.integer, np.round(x), x)
            self.offer(xi)
            if self._prune(bound):
                return []
        # dual fixing and child bounds from the linearization at x: f ≥ f(x) + ⟨g, v − x⟩
        lin = res.value - max(float(res.grad @ (x - res.fw_vertex)), 0.0)
        deltas = getattr(self.lmo, "child_deltas", None)
        d0 = d1 = None
        if deltas is not None:
            d0, d1 = deltas(res.grad, lb, ub)
            if cfg.dual_fixing:
                free = self.integer & (ub > lb)
                to0 = free & (lin + d1 >= self.cutoff)  # forcing x_j = 1 cannot win → x_j = 0
                to1 = free & (lin + d0 >= self.cutoff)
                if to0.any() or to1.any():
                    lb, ub = lb.copy(), ub.copy()
                    ub[to0] = 0.0
                    lb[to1] = 1.0
                    if (to0 & to1).any() or not self.lmo.feasible(lb, ub):
                        # every point of the node is ≥ cutoff by the child bounds
                        self._pruned_min = min(self._pruned_min, max(bound, self.cutoff))
                        return []
        j = most_fractional(x, self.integer, lb, ub)
        if j < 0:  # every integer variable fixed: the relaxation is the node's problem
            if res.status != "converged":  # give the leaf a final push
                start = res.active.restrict(lb, ub)
                if start is None:
                    try:
                        start = ActiveSet.vertex(self.lmo(res.grad, lb, ub))
                    except LMOLimit:
                        return self._stop_unsolved(bound)
                res2 = bpcg(f, lambda g: self.lmo(g, lb, ub), start,
                            max_iter=10 * cfg.node_iter, gap_tol=self.tol * 0.5, cutoff=self.cutoff, on_vertex=self.offer)
                self.iterations += res2.iterations
                bound = max(bound, res2.lower_bound)
                if res2.status == "lmo_limit":
                    return self._stop_unsolved(bound)
                self.offer(np.where(self.integer, np.round(res2.x), res2.x))
            if not self._prune(bound):
                self._pruned_min = min(self._pruned_min, bound)  # unresolved leaf: keep its bound honest
            return []
        xj = x[j]
        lo_val, hi_val = math.floor(xj), math.floor(xj) + 1
        if frac[j] <= cfg.int_tol:  # integral but unresolved: split at the rounded value
            r = round(xj)
            lo_val, hi_val = (r, r + 1) if r < ub[j] else (r - 1, r)
        children = []
        for side in (0, 1):
            clb, cub = lb.copy(), ub.copy()
            if side == 0:
                cub[j] = lo_val
            else:
                clb[j] = hi_val
            act = res.active.restrict(clb, cub)
            if clb[j] > cub[j] or (act is None and not self.lmo.feasible(clb, cub)):
                continue
            cbound = bound
            if d0 is not None and lo_val == 0 and hi_val == 1:
                cbound = max(bound, lin + (d0[j] if side == 0 else d1[j]))
            if self._prune(cbound):
                continue
            children.append(
                Node(self._key(cbound, node.depth + 1), self._next_id(), clb, cub, cbound, node.depth + 1, act, x)
            )
        return children

    def _loose(self, node: Node) -> float | None:
        if not math.isfinite(self.best_value):
            return None
        return max(self.tol, self.cfg.loose_gap * max(self.best_value - node.bound, 0.0))
