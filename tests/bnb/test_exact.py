"""Method 'exact': optimal per-row masks on small layers, anytime behaviour, row selection."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from maskopt.testing import brute_force_row
from maskopt.solve.methods import get_method
from maskopt.solve.methods.exact import parse_rows
from maskopt.solve.problem import LayerProblem


def problem(pattern: str, seed: int = 0, rows: int = 4, d: int = 12) -> LayerProblem:
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(d, 2 * d, generator=g, dtype=torch.float64)
    return LayerProblem(torch.randn(rows, d, generator=g, dtype=torch.float64), X @ X.T, pattern, 0.5)


@pytest.mark.parametrize("pattern", ["per_row", "2:4"])
def test_exact_rows_are_optimal(pattern: str) -> None:
    p = problem(pattern)
    sol = get_method("exact", seed="wanda").solve(p)
    assert p.is_feasible(sol.mask)
    opt = [brute_force_row(p.W[i].numpy(), p.G.numpy(), p.pattern.kind, p.keep, p.pattern.m)[0] for i in range(p.rows)]
    assert p.error(sol.mask) == pytest.approx(sum(opt), rel=1e-6)
    assert sol.info["rows_optimal"] == p.rows and sol.info["rows_gap"] <= 1e-5
    wanda = get_method("wanda").solve(p).mask
    assert p.error(sol.mask) <= p.error(wanda) + 1e-9


def test_time_limit_falls_back_to_incumbent_with_gap() -> None:
    p = problem("per_row", seed=3, rows=2, d=16)
    sol = get_method("exact", node_limit=1, seed="wanda").solve(p)
    assert p.is_feasible(sol.mask)
    info = sol.info
    assert 0 <= info["rows_lower_bound"] <= info["rows_error"] * (1 + 1e-12)
    assert info["rows_error"] == pytest.approx(p.error(sol.mask))


def test_row_subset_and_options() -> None:
    p = problem("per_row", seed=1)
    sol = get_method("exact", rows="1-2", time_limit="5").solve(p)
    wanda = get_method("wanda").solve(p).mask
    assert torch.equal(sol.mask[[0, 3]], wanda[[0, 3]]) or p.error(sol.mask) <= p.error(wanda)
    assert sol.info["rows_solved"] == 2
    assert parse_rows("0,3-5", 10) == [0, 3, 4, 5] and parse_rows("all", 3) == [0, 1, 2]
    with pytest.raises(ValueError):
        parse_rows("12", 10)
    with pytest.raises(ValueError):
        get_method("exact").solve(problem("unstructured"))


def test_seed_none_runs_no_other_method(monkeypatch: pytest.MonkeyPatch) -> None:
    """seed='none': the B&B starts from its own incumbents; no other method (Wanda …) is called."""
    from maskopt.solve.methods import exact as exact_mod

    p = problem("per_row", seed=4)
    method = get_method("exact", seed="none")
    partial = get_method("exact", seed="none", rows="1-2")

    def no_methods(name: str, **kw):
        raise AssertionError(f"seed='none' ran method {name!r}")

    monkeypatch.setattr(exact_mod, "get_method", no_methods)
    sol = method.solve(p)
    opt = [brute_force_row(p.W[i].numpy(), p.G.numpy(), "per_row", p.keep)[0] for i in range(p.rows)]
    assert p.error(sol.mask) == pytest.approx(sum(opt), rel=1e-6)
    assert sol.info["seed"] == "none" and sol.info["rows_optimal"] == p.rows
    own = p.topk(p.W**2 * p.G.diagonal())  # the rows not solved keep the B&B's own start
    part = partial.solve(p)
    assert p.is_feasible(part.mask) and torch.equal(part.mask[[0, 3]], own[[0, 3]])
    assert torch.equal(part.mask[[1, 2]], sol.mask[[1, 2]])
