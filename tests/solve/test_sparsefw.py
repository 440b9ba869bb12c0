"""SparseFW: relaxation/bound soundness vs brute force, exact counts, fixings, determinism."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st

from maskopt.testing import brute_force, random_problem
from maskopt.solve.methods import get_method
from maskopt.solve.methods.sparsefw import round_topk
from maskopt.solve.methods.wanda import wanda_scores
from maskopt.solve.patterns import Pattern
from maskopt.solve.problem import LayerProblem

torch.set_num_threads(1)


@settings(max_examples=10, deadline=None)
@given(rows=st.integers(1, 3), pattern=st.sampled_from(["per_row", "2:4", "1:4"]),
       sparsity=st.sampled_from([0.5, 0.7]), alpha=st.sampled_from([0.0, 0.5]),
       step=st.sampled_from(["agnostic", "exact"]), seed=st.integers(0, 10_000))
def test_bounds_below_brute_force(rows, pattern, sparsity, alpha, step, seed):
    d = 12 if pattern == "per_row" else 8
    W, G = random_problem(rows, d, seed)
    pr = LayerProblem(W, G, pattern, sparsity)
    sol = get_method("sparsefw", iterations=400, alpha=alpha, step=step).solve(pr)
    opt, _ = brute_force(W, G, pr.pattern, pr.keep)
    tol = 1e-9 * max(1.0, opt)
    assert pr.is_feasible(sol.mask)
    assert sol.info["lower_bound"] <= opt + tol  # certified bound on all masks
    assert sol.info["lower_bound"] <= sol.info["relaxed_value"] + tol
    assert sol.info["rounded_error"] >= opt - tol and sol.info["error"] >= opt - tol
    assert sol.info["error"] == pytest.approx(pr.error(sol.mask), rel=1e-12)
    if alpha == 0.0:  # the unrestricted relaxation is below the best mask once FW has converged
        assert sol.info["relaxed_value"] <= opt + 1e-3 * max(1.0, opt) + sol.info["gap"]


@pytest.mark.parametrize("pattern", ["per_row", "2:4", "unstructured"])
def test_converged_relaxation_below_optimum(pattern):
    rows, d = (2, 5) if pattern == "unstructured" else (3, 12)
    W, G = random_problem(rows, d, 11)
    pr = LayerProblem(W, G, pattern, 0.5)
    sol = get_method("sparsefw", iterations=3000, alpha=0.0, step="exact", rtol=0.0).solve(pr)
    opt, _ = brute_force(W, G, pr.pattern, pr.keep)
    assert sol.info["relaxed_value"] <= opt + 1e-9
    assert sol.info["lower_bound"] <= sol.info["relaxed_value"] + 1e-9
    assert sol.info["gap"] >= -1e-9
    assert pr.is_feasible(sol.mask)


@pytest.mark.parametrize("pattern,sparsity", [("per_row", 0.6), ("2:4", 0.5), ("4:8", 0.5), ("unstructured", 0.7)])
def test_counts_fixings_determinism(pattern, sparsity):
    W, G = random_problem(16, 32, 4, dtype=torch.float32)
    pr = LayerProblem(W, G, pattern, sparsity)
    a = get_method("sparsefw", iterations=100, alpha=0.5, rtol=0.0).solve(pr)
    b = get_method("sparsefw", iterations=100, alpha=0.5, rtol=0.0).solve(pr)
    assert pr.is_feasible(a.mask) and torch.equal(a.mask, b.mask)
    fixed = pr.pattern.topk_mask(wanda_scores(pr), int(0.5 * pr.keep))
    assert bool(a.mask[fixed].all())  # the top-αk Wanda entries are always kept
    assert a.info["error"] <= a.info["warm_error"] + 1e-6 * a.info["warm_error"]  # keep_best
    assert a.info["iterations"] == 100


def test_round_topk_ties_follow_tiebreak():
    pat = Pattern.parse("per_row")
    m = torch.tensor([[1.0, 1.0, 1.0, 0.2]])
    tb = torch.tensor([[0.1, 0.9, 0.5, 5.0]])
    assert round_topk(pat, m, tb, 2).tolist() == [[False, True, True, False]]


def test_bad_alpha():
    W, G = random_problem(2, 8, 0)
    with pytest.raises(ValueError, match="alpha"):
        get_method("sparsefw", alpha=1.0).solve(LayerProblem(W, G, "per_row", 0.5))


@pytest.mark.parametrize("pattern", ["per_row", "2:4", "unstructured"])
@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_first_step_keeps_warm_start(pattern, alpha):
    """The defaults never throw the Wanda warm start away: after one step L(m_1) ≤ L(Wanda)."""
    rows, d = (3, 8) if pattern == "unstructured" else (12, 16)
    W, G = random_problem(rows, d, 21)
    pr = LayerProblem(W, G, pattern, 0.5)
    one = get_method("sparsefw", iterations=1, alpha=alpha, keep_best=False).solve(pr)
    assert one.info["iterations"] == 1
    assert one.info["relaxed_value"] <= one.info["warm_error"] * (1 + 1e-12)
    many = get_method("sparsefw", alpha=alpha, keep_best=False, rtol=0.0, iterations=50).solve(pr)
    assert many.info["relaxed_value"] <= one.info["relaxed_value"] * (1 + 1e-12)  # exact line search: monotone


def test_agnostic_first_step_is_not_the_vertex():
    from maskopt.solve.fw import Agnostic, TopKLMO, frank_wolfe

    W, G = random_problem(6, 16, 5)
    pr = LayerProblem(W, G, "per_row", 0.5)
    m0 = get_method("wanda").solve(pr).mask
    lmo = TopKLMO(pr.pattern, pr.keep)
    res = frank_wolfe(W, G, lmo, m0, 1, Agnostic(), rowwise=True)
    # m_1 = m_0 + γ (v − m_0) with γ = 2/3: the warm start keeps weight 1/3
    vals = set(round(float(x), 9) for x in res.m.unique())
    assert vals <= {0.0, round(1 / 3, 9), round(2 / 3, 9), 1.0} and round(1 / 3, 9) in vals


def test_relative_gap_stop():
    W, G = random_problem(8, 16, 6)
    pr = LayerProblem(W, G, "per_row", 0.5)
    sol = get_method("sparsefw", iterations=5000, rtol=0.05).solve(pr)
    assert sol.info["iterations"] < 5000
    assert sol.info["gap"] <= 0.05 * sol.info["relaxed_value"] * (1 + 1e-9)
