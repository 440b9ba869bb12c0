"""An LMO that cannot answer (HiGHS at its time limit) never prunes a node nor yields a false 'optimal'."""
from __future__ import annotations

import numpy as np
import pytest

from maskopt.solve.bnb import BnBConfig, BranchAndBound, QuadraticObjective
from maskopt.solve.bnb.lmo import Infeasible, LMOLimit
from maskopt.solve.fw.active_set import ActiveSet, bpcg

pytest.importorskip("highspy")
from maskopt.solve.bnb.milp import HighsLMO  # noqa: E402


def subset_regression(seed: int = 0, n: int = 30, p: int = 8, k: int = 3, M: float = 4.0):
    """min ‖y − Xβ‖² s.t. |β_j| ≤ M z_j, Σ z ≤ k, z binary: objective, constraint data."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p))
    y = X[:, :k] @ rng.uniform(1, 2, k) + 0.3 * rng.standard_normal(n)
    A = np.zeros((2 * p, 2 * p))
    A[:p, :p] = X.T @ X
    f = QuadraticObjective(A, np.concatenate([-2 * X.T @ y, np.zeros(p)]), float(y @ y))
    rows = []
    for j in range(p):
        for s in (1.0, -1.0):
            r = np.zeros(2 * p)
            r[j], r[p + j] = s, -M
            rows.append(r)
    rows.append(np.concatenate([np.zeros(p), np.ones(p)]))
    lo = np.full(len(rows), -np.inf)
    hi = np.concatenate([np.zeros(2 * p), [k]])
    lb = np.concatenate([np.full(p, -M), np.zeros(p)])
    ub = np.concatenate([np.full(p, M), np.ones(p)])
    integer = np.concatenate([np.zeros(p, bool), np.ones(p, bool)])
    return f, (np.array(rows), lo, hi, lb, ub, integer)


class FlakyHighs(HighsLMO):
    """HiGHS that answers its first ``good`` calls and then runs with a time limit it cannot meet."""

    def __init__(self, *args, good: int, **kw):
        super().__init__(*args, **kw)
        self.good = good

    def __call__(self, g, lb, ub):
        if self.calls == self.good:
            self.h.setOptionValue("time_limit", 1e-9)
        return super().__call__(g, lb, ub)


def reference_optimum() -> float:
    f, (A, lo, hi, lb, ub, integer) = subset_regression()
    res = BranchAndBound(f, HighsLMO(A, lo, hi, lb, ub, integer), lb, ub, integer, BnBConfig(rel_tol=1e-9)).solve()
    assert res.status == "optimal"
    return res.value


def test_timed_out_lmo_is_a_limit_not_infeasible() -> None:
    f, (A, lo, hi, lb, ub, integer) = subset_regression()
    lmo = HighsLMO(A, lo, hi, lb, ub, integer, time_limit=1e-9)
    with pytest.raises(LMOLimit) as err:
        lmo(np.ones(len(lb)), lb, ub)
    assert not isinstance(err.value, Infeasible) and err.value.bound <= 0.0
    assert lmo.feasible(lb, ub) and lmo.undecided == 1  # undecided: the node is kept
    res = BranchAndBound(f, lmo, lb, ub, integer).solve()
    assert res.status == "lmo_limit"  # not "infeasible": nothing was proven
    assert res.lower_bound <= reference_optimum()
    assert res.info["unsolved_nodes"] >= 1


@pytest.mark.parametrize("good", [1, 3, 8, 20])
def test_time_out_inside_the_tree_keeps_a_valid_bound(good: int) -> None:
    opt = reference_optimum()
    f, (A, lo, hi, lb, ub, integer) = subset_regression()
    lmo = FlakyHighs(A, lo, hi, lb, ub, integer, good=good)
    res = BranchAndBound(f, lmo, lb, ub, integer, BnBConfig(rel_tol=1e-9)).solve()
    assert res.status == "lmo_limit"
    assert res.lower_bound <= opt * (1 + 1e-9)
    if res.x is not None:  # incumbents are feasible points, so never below the optimum
        assert res.value >= opt * (1 - 1e-9)
        beta, z = res.x[:8], res.x[8:]
        assert z.sum() <= 3 and np.all(np.abs(beta) <= 4.0 * z + 1e-7)


def test_bpcg_stops_on_lmo_limit_with_the_oracle_bound() -> None:
    """f = ‖x − e₀‖² over the simplex (min 0). The oracle gives up at once with a weak dual bound b:
    BPCG stops there and reports f(x) + b − ⟨g, x⟩, a valid bound; with no bound it reports −inf."""
    f = QuadraticObjective(np.eye(3), np.array([-2.0, 0.0, 0.0]), 1.0)
    x0 = np.eye(3)[1]
    g = f.grad(x0)
    b = float(g.min()) - 0.5  # below the true min ⟨g, v⟩ = −2

    def giving_up(bound: float):
        def lmo(grad: np.ndarray) -> np.ndarray:
            raise LMOLimit("limit", vertex=np.eye(3)[2], bound=bound)
        return lmo

    seen = []
    res = bpcg(f, giving_up(b), ActiveSet.vertex(x0), max_iter=100, on_vertex=lambda v: seen.append(v) or np.inf)
    assert res.status == "lmo_limit" and res.fw_vertex is None and res.lmo_calls == 1
    assert res.lower_bound == pytest.approx(f.value(x0) + b - g @ x0) and res.lower_bound <= 0.0
    assert len(seen) == 1 and np.array_equal(seen[0], np.eye(3)[2])  # its feasible point is still offered
    res = bpcg(f, giving_up(-np.inf), ActiveSet.vertex(x0), max_iter=100)
    assert res.status == "lmo_limit" and res.lower_bound == -np.inf
