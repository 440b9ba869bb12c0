"""A general bounded LMO: a MILP over linear constraints solved by HiGHS (``highspy``).

    P ∩ Z = { x : row_lower ≤ A x ≤ row_upper, lb ≤ x ≤ ub, x_j ∈ Z for j ∈ integer }

The oracle solves min ⟨g, x⟩ over it with the node's bounds, so every vertex it returns
is mixed-integer feasible; conv of those vertices is the integer hull the FW relaxation
works on. One HiGHS model is built once and only costs and bounds change per call.

Only HiGHS's "Optimal" is an answer and only "Infeasible" prunes. Any other status (the
``time_limit`` hit, iteration limits, unbounded-or-infeasible, solver errors) raises
``LMOLimit`` with the feasible point HiGHS found (if any) and its MIP dual bound (−inf when it
has none, e.g. for a pure LP): the B&B then stops that node as unsolved and never claims
optimality over it. ``feasible`` answers True when HiGHS could not decide (keeping a node is
safe, dropping it is not) and counts those calls in ``undecided``.
"""
from __future__ import annotations

import numpy as np

from .lmo import Infeasible, LMOLimit


class HighsLMO:
    def __init__(
        self,
        A: np.ndarray,
        row_lower: np.ndarray,
        row_upper: np.ndarray,
        lb: np.ndarray,
        ub: np.ndarray,
        integer: np.ndarray,
        *,
        time_limit: float = 60.0,
    ):
        import highspy  # runtime dependency; imported lazily to keep `import maskopt` light

        self._highspy = highspy
        A = np.atleast_2d(np.asarray(A, dtype=np.float64))
        self.n = A.shape[1]
        self.lb0 = np.asarray(lb, dtype=np.float64)
        self.ub0 = np.asarray(ub, dtype=np.float64)
        self.integer = np.asarray(integer, dtype=bool)
        h = highspy.Highs()
        h.setOptionValue("output_flag", False)
        h.setOptionValue("mip_rel_gap", 0.0)
        h.setOptionValue("mip_abs_gap", 0.0)
        h.setOptionValue("time_limit", float(time_limit))
        inf = highspy.kHighsInf
        clip = lambda a: np.where(a == np.inf, inf, np.where(a == -np.inf, -inf, a))
        h.addVars(self.n, clip(self.lb0), clip(self.ub0))
        ints = np.flatnonzero(self.integer).astype(np.int32)
        if len(ints):
            h.changeColsIntegrality(len(ints), ints, np.array([highspy.HighsVarType.kInteger] * len(ints)))
        starts, index, values = [], [], []
        for row in A:
            nz = np.flatnonzero(row)
            starts.append(len(index))
            index.extend(nz.tolist())
            values.extend(row[nz].tolist())
        h.addRows(
            A.shape[0],
            clip(np.asarray(row_lower, dtype=np.float64)),
            clip(np.asarray(row_upper, dtype=np.float64)),
            len(index),
            np.array(starts, dtype=np.int32),
            np.array(index, dtype=np.int32),
            np.array(values, dtype=np.float64),
        )
        self.h = h
        self._all = np.arange(self.n, dtype=np.int32)
        self.calls = 0
        self.undecided = 0  # feasibility checks HiGHS could not decide (answered True)

    def _set_bounds(self, lb: np.ndarray, ub: np.ndarray) -> None:
        self.h.changeColsBounds(self.n, self._all, np.asarray(lb, dtype=np.float64), np.asarray(ub, dtype=np.float64))

    def __call__(self, g: np.ndarray, lb: np.ndarray | None = None, ub: np.ndarray | None = None) -> np.ndarray:
        lb = self.lb0 if lb is None else lb
        ub = self.ub0 if ub is None else ub
        self.calls += 1
        self._set_bounds(lb, ub)
        self.h.changeColsCost(self.n, self._all, np.asarray(g, dtype=np.float64))
        self.h.run()
        status = self.h.getModelStatus()
        kinds = self._highspy.HighsModelStatus
        if status == kinds.kOptimal:
            return self._solution(lb, ub)
        message = f"HiGHS LMO: {self.h.modelStatusToString(status)}"
        if status == kinds.kInfeasible:
            raise Infeasible(message)
        info = self.h.getInfo()
        has_point = int(info.primal_solution_status) == int(self._highspy.SolutionStatus.kSolutionStatusFeasible)
        bound = float(info.mip_dual_bound) if self.integer.any() else -np.inf
        if not np.isfinite(bound) or status == kinds.kUnbounded:
            bound = -np.inf
        raise LMOLimit(message, self._solution(lb, ub) if has_point else None, bound)

    def _solution(self, lb: np.ndarray, ub: np.ndarray) -> np.ndarray:
        x = np.array(self.h.getSolution().col_value, dtype=np.float64)
        x[self.integer] = np.round(x[self.integer])
        return np.clip(x, lb, ub)

    def feasible(self, lb: np.ndarray, ub: np.ndarray) -> bool:
        try:
            self(np.zeros(self.n), lb, ub)
            return True
        except Infeasible:
            return False
        except LMOLimit:
            self.undecided += 1
            return True
