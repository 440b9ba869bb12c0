"""DSnoT baseline: feasibility, monotone improvement over the warm start, determinism."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st

from maskopt.testing import random_problem
from maskopt.solve.methods import available, get_method
from maskopt.solve.problem import LayerProblem

torch.set_num_threads(1)


def test_registered():
    assert {"dsnot", "sparsefw", "sparseswaps"} <= set(available())


@settings(max_examples=10, deadline=None)
@given(rows=st.integers(1, 8), pattern=st.sampled_from(["per_row", "2:4", "4:8"]),
       sparsity=st.sampled_from([0.5, 0.6, 0.7]), seed=st.integers(0, 10_000))
def test_feasible_and_not_worse(rows, pattern, sparsity, seed):
    W, G = random_problem(rows, 16, seed)
    pr = LayerProblem(W, G, pattern, sparsity)
    sol = get_method("dsnot").solve(pr)
    assert pr.is_feasible(sol.mask)
    assert sol.info["error"] <= sol.info["warm_error"] + 1e-9
    assert sol.info["error"] == pytest.approx(pr.error(sol.mask), rel=1e-12)


def test_improves_and_is_deterministic_and_below_sparseswaps_quality():
    W, G = random_problem(32, 64, 3)
    pr = LayerProblem(W, G, "per_row", 0.6)
    a, b = get_method("dsnot").solve(pr), get_method("dsnot").solve(pr)
    assert torch.equal(a.mask, b.mask)
    assert a.info["swaps"] > 0 and a.info["error"] < a.info["warm_error"]
    sw = get_method("sparseswaps", max_iter=None).solve(pr)  # best-pair search reaches a 1-swap optimum
    assert sw.info["error"] <= a.info["error"] * (1 + 1e-9)


def test_unstructured_rejected():
    W, G = random_problem(2, 8, 0)
    with pytest.raises(ValueError, match="per_row"):
        get_method("dsnot").solve(LayerProblem(W, G, "unstructured", 0.5))
