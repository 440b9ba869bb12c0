"""SparseSwaps: Δ formula, 1-swap optimality (exhaustive), monotonicity, counts, determinism."""
from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings, strategies as st

from maskopt.testing import brute_force, random_problem
from maskopt.solve.methods import get_method
from maskopt.solve.patterns import Pattern
from maskopt.solve.problem import LayerProblem
from maskopt.solve.swaps import swap_delta, swap_refine

torch.set_num_threads(1)  # tiny tensors: threads only add contention


def _swap_pairs(mask_row: torch.Tensor, pattern: Pattern):
    d = mask_row.numel()
    for p, u in itertools.product(range(d), range(d)):
        if mask_row[p] or not mask_row[u]:
            continue
        if pattern.kind == "nm" and p // pattern.m != u // pattern.m:
            continue
        yield p, u


def assert_one_swap_optimal(problem: LayerProblem, mask: torch.Tensor, rtol: float = 1e-9) -> None:
    """No single (pruned, kept) swap in any row lowers that row's error (exhaustive)."""
    base = problem.row_errors(mask)
    scale = problem.row_errors(torch.zeros_like(mask))
    for i in range(problem.rows):
        for p, u in _swap_pairs(mask[i], problem.pattern):
            m2 = mask[i : i + 1].clone()
            m2[0, p], m2[0, u] = True, False
            sub = LayerProblem(problem.W[i : i + 1], problem.G, "per_row", 0.5)
            assert float(sub.row_errors(m2)[0]) >= float(base[i]) - rtol * float(scale[i]), (i, p, u)


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 6), d=st.sampled_from([4, 8, 12, 16]), seed=st.integers(0, 10_000))
def test_delta_formula_exact(rows, d, seed):
    W, G = random_problem(rows, d, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    mask = Pattern().topk_mask(torch.rand(rows, d, generator=gen), d // 2)
    C = (W * (~mask)) @ G
    order = torch.argsort(mask.to(torch.int8), dim=1, descending=True, stable=True)
    k = d // 2
    u = order[torch.arange(rows), torch.randint(0, k, (rows,), generator=gen)]
    p = order[torch.arange(rows), k + torch.randint(0, d - k, (rows,), generator=gen)]
    delta = swap_delta(W, G, C, p, u)
    m2 = mask.clone()
    m2[torch.arange(rows), p] = True
    m2[torch.arange(rows), u] = False
    pr = LayerProblem(W, G, "per_row", 0.5)
    torch.testing.assert_close(delta, pr.row_errors(m2) - pr.row_errors(mask), rtol=1e-9, atol=1e-9)


@settings(max_examples=12, deadline=None)
@given(rows=st.integers(1, 4), pattern=st.sampled_from(["per_row", "2:4", "1:4", "4:8"]),
       sparsity=st.sampled_from([0.5, 0.6, 0.7]), warm=st.sampled_from(["wanda", "magnitude", "sparsefw"]),
       seed=st.integers(0, 10_000))
def test_one_swap_optimal_and_not_worse(rows, pattern, sparsity, warm, seed):
    d = 12 if pattern == "per_row" else 8
    W, G = random_problem(rows, d, seed)
    pr = LayerProblem(W, G, pattern, sparsity)
    sol = get_method("sparseswaps", warm_start=warm, max_iter=None, tol=0.0).solve(pr)
    assert pr.is_feasible(sol.mask)
    assert sol.info["error"] <= sol.info["warm_error"] + 1e-9
    assert sol.info["error"] == pytest.approx(pr.error(sol.mask), rel=1e-12)
    assert sol.info["rows_converged"] == rows and sol.info["rows_stopped_early"] == 0
    assert_one_swap_optimal(pr, sol.mask)
    opt, _ = brute_force(W, G, pr.pattern, pr.keep)
    assert sol.info["error"] >= opt - 1e-9 * max(1.0, opt)


def test_counts_determinism_and_chunking():
    W, G = random_problem(24, 32, 5)
    for pattern in ("per_row", "2:4"):
        pr = LayerProblem(W, G, pattern, 0.6)
        a = get_method("sparseswaps").solve(pr)
        b = get_method("sparseswaps", mem_cap_mb=1e-4).solve(pr)  # one row per chunk
        assert pr.is_feasible(a.mask)
        assert torch.equal(a.mask, b.mask)
        assert a.info["swaps"] > 0 and a.info["error"] < a.info["warm_error"]
        m0 = get_method("wanda").solve(pr).mask
        c = swap_refine(W, G, m0, pr.pattern, pr.keep, max_iter=2, swaps_per_iter=1)
        assert int(c.swaps.max()) <= 2 and c.iterations == 2
        c = swap_refine(W, G, m0, pr.pattern, pr.keep, max_iter=2, swaps_per_iter=3)
        assert int(c.swaps.max()) <= 6 and int(c.swaps.max()) > 2  # several swaps per iteration happen


def test_refit_reported_separately_and_not_worse():
    W, G = random_problem(8, 16, 2)
    pr = LayerProblem(W, G, "per_row", 0.5)
    sol = get_method("sparseswaps", refit=True).solve(pr)
    assert sol.weight is not None and bool((sol.weight[~sol.mask] == 0).all())
    assert sol.info["refit_error"] <= sol.info["error"] + 1e-9


def test_unstructured_and_self_warm_start_rejected():
    W, G = random_problem(2, 8, 0)
    with pytest.raises(ValueError, match="per_row"):
        get_method("sparseswaps").solve(LayerProblem(W, G, "unstructured", 0.5))
    with pytest.raises(ValueError, match="itself"):
        get_method("sparseswaps", warm_start="sparseswaps").solve(LayerProblem(W, G, "per_row", 0.5))


def test_float32_never_worse_than_warm_start():
    W, G = random_problem(16, 32, 9, dtype=torch.float32)
    pr = LayerProblem(W, G, "per_row", 0.7)
    sol = get_method("sparseswaps").solve(pr)
    assert pr.is_feasible(sol.mask) and sol.info["error"] <= sol.info["warm_error"]
