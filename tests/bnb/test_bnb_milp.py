"""The general path: B&B with a HiGHS MILP LMO on convex MINLPs, checked against SCIP.

1. Sparse regression with a cardinality constraint (Bertsimas, King & Mazumder 2016):
   min ‖y − Xβ‖² s.t. −M z ≤ β ≤ M z, Σ z ≤ k, z ∈ {0,1}^p  (β continuous).
2. Integer portfolio (mean-variance with lots): min xᵀΣx − λ μᵀx s.t. pᵀx ≤ B, 0 ≤ x ≤ u, x ∈ Z^n.
"""
from __future__ import annotations

import numpy as np
import pytest

from maskopt.solve.bnb import BnBConfig, BranchAndBound, FunctionObjective, QuadraticObjective
from maskopt.solve.bnb.milp import HighsLMO

pyscipopt = pytest.importorskip("pyscipopt")


def sparse_regression(seed: int, n: int = 20, p: int = 6, k: int = 2, M: float = 3.0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p))
    beta = np.zeros(p)
    beta[rng.choice(p, k, replace=False)] = rng.uniform(1, 2, k) * rng.choice([-1, 1], k)
    y = X @ beta + 0.3 * rng.standard_normal(n)
    # variables (β, z): A = [[XᵀX, 0], [0, 0]], b = [−2Xᵀy, 0], c = yᵀy
    A = np.zeros((2 * p, 2 * p))
    A[:p, :p] = X.T @ X
    b = np.concatenate([-2 * X.T @ y, np.zeros(p)])
    rows = []
    for j in range(p):  # β_j − M z_j ≤ 0 and −β_j − M z_j ≤ 0
        r = np.zeros(2 * p); r[j], r[p + j] = 1, -M; rows.append(r)
        r = np.zeros(2 * p); r[j], r[p + j] = -1, -M; rows.append(r)
    card = np.concatenate([np.zeros(p), np.ones(p)])
    rows.append(card)
    Arows = np.array(rows)
    lo = np.full(len(rows), -np.inf)
    hi = np.concatenate([np.zeros(2 * p), [k]])
    lb = np.concatenate([np.full(p, -M), np.zeros(p)])
    ub = np.concatenate([np.full(p, M), np.ones(p)])
    integer = np.concatenate([np.zeros(p, bool), np.ones(p, bool)])
    return X, y, QuadraticObjective(A, b, float(y @ y)), (Arows, lo, hi, lb, ub, integer), (p, k, M)


def scip_sparse_regression(X, y, p, k, M) -> float:
    from pyscipopt import Model, quicksum

    m = Model(); m.hideOutput()
    beta = [m.addVar(lb=-M, ub=M) for _ in range(p)]
    z = [m.addVar(vtype="B") for _ in range(p)]
    t = m.addVar(lb=0)
    for j in range(p):
        m.addCons(beta[j] <= M * z[j]); m.addCons(-beta[j] <= M * z[j])
    m.addCons(quicksum(z) <= k)
    res = [y[i] - quicksum(X[i, j] * beta[j] for j in range(p)) for i in range(len(y))]
    m.addCons(quicksum(r * r for r in res) <= t)
    m.setObjective(t); m.setParam("limits/gap", 1e-9)
    m.optimize()
    return float(m.getObjVal())


@pytest.mark.parametrize("seed", [0, 1])
def test_sparse_regression_matches_scip(seed: int) -> None:
    X, y, f, (A, lo, hi, lb, ub, integer), (p, k, M) = sparse_regression(seed)
    lmo = HighsLMO(A, lo, hi, lb, ub, integer)
    res = BranchAndBound(f, lmo, lb, ub, integer, BnBConfig(rel_tol=1e-6, time_limit=60)).solve()
    ref = scip_sparse_regression(X, y, p, k, M)
    assert res.status == "optimal"
    assert res.value == pytest.approx(ref, rel=1e-4, abs=1e-6)
    assert res.lower_bound <= ref * (1 + 1e-6) + 1e-9
    beta, z = res.x[:p], res.x[p:]
    assert np.all(np.isin(z, [0, 1])) and z.sum() <= k and np.all(np.abs(beta) <= M * z + 1e-7)


def test_integer_portfolio_matches_scip_with_generic_objective() -> None:
    rng = np.random.default_rng(2)
    n = 4
    F = rng.standard_normal((n, n))
    Sigma = F @ F.T / n + 0.05 * np.eye(n)
    mu = rng.uniform(0.5, 1.5, n)
    price = rng.uniform(1, 3, n)
    budget, u, lam = 6.0, 2.0, 2.0
    fval = lambda x: float(x @ Sigma @ x - lam * mu @ x)
    grad = lambda x: 2 * Sigma @ x - lam * mu
    f = FunctionObjective(fval, grad)  # the generic (f, ∇f) path with a bisection line search
    lb, ub = np.zeros(n), np.full(n, u)
    lmo = HighsLMO(price[None, :], np.array([-np.inf]), np.array([budget]), lb, ub, np.ones(n, bool))
    res = BranchAndBound(f, lmo, lb, ub, None, BnBConfig(time_limit=60)).solve()

    from pyscipopt import Model, quicksum

    m = Model(); m.hideOutput()
    x = [m.addVar(vtype="I", lb=0, ub=u) for _ in range(n)]
    t = m.addVar(lb=-1e6)
    m.addCons(quicksum(price[i] * x[i] for i in range(n)) <= budget)
    m.addCons(quicksum(Sigma[i, j] * x[i] * x[j] for i in range(n) for j in range(n)) - quicksum(lam * mu[i] * x[i] for i in range(n)) <= t)
    m.setObjective(t); m.setParam("limits/gap", 1e-9)
    m.optimize()
    ref = float(m.getObjVal())
    assert res.status == "optimal"
    assert res.value == pytest.approx(ref, rel=1e-5, abs=1e-7)
    assert res.lower_bound <= ref + 1e-6 * abs(ref) + 1e-9
    assert price @ res.x <= budget + 1e-9 and np.all(res.x == np.round(res.x))


def test_infeasible_and_limits() -> None:
    X, y, f, (A, lo, hi, lb, ub, integer), _ = sparse_regression(3)
    lmo = HighsLMO(A, lo, hi, lb, ub, integer)
    res = BranchAndBound(f, lmo, lb, ub, integer, BnBConfig(node_limit=1)).solve()
    assert res.x is not None and res.lower_bound <= res.value
    assert res.status in ("node_limit", "optimal")
    bad = HighsLMO(np.ones((1, 2)), np.array([3.0]), np.array([3.0]), np.zeros(2), np.ones(2), np.ones(2, bool))
    out = BranchAndBound(QuadraticObjective(np.eye(2), np.zeros(2)), bad, np.zeros(2), np.ones(2)).solve()
    assert out.status == "infeasible" and out.x is None
