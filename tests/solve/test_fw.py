"""Frank-Wolfe core: objective/gradient, LMO feasibility and bounds, step rules, certified bounds."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st

from maskopt.testing import brute_force, random_problem
from maskopt.solve.fw import Agnostic, ExactLineSearch, InfeasibleBounds, TopKLMO, frank_wolfe
from maskopt.testing import quad_grad, quad_rows
from maskopt.solve.patterns import Pattern

PATTERNS = ["per_row", "2:4", "unstructured"]


def _keep(pattern: str, rows: int, d: int) -> int:
    return Pattern.parse(pattern).keep_per_group(rows, d, 0.5)


@settings(max_examples=15, deadline=None)
@given(rows=st.integers(1, 5), d=st.sampled_from([4, 8, 12]), seed=st.integers(0, 10_000))
def test_grad_matches_autograd(rows, d, seed):
    W, G = random_problem(rows, d, seed)
    m = torch.rand(rows, d, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)).requires_grad_()
    quad_rows(W, G, m).sum().backward()
    torch.testing.assert_close(quad_grad(W, G, m.detach()), m.grad, rtol=1e-10, atol=1e-9)
    torch.testing.assert_close(quad_grad(W, G, m.detach(), WG=W @ G), m.grad, rtol=1e-10, atol=1e-9)


@settings(max_examples=20, deadline=None)
@given(rows=st.integers(1, 4), d=st.sampled_from([4, 8, 12]), pattern=st.sampled_from(PATTERNS),
       seed=st.integers(0, 10_000))
def test_lmo_feasible_and_minimal(rows, d, pattern, seed):
    pat = Pattern.parse(pattern)
    keep = _keep(pattern, rows, d)
    gen = torch.Generator().manual_seed(seed)
    grad = torch.randn(rows, d, generator=gen, dtype=torch.float64)
    fixed_one = torch.zeros(rows, d, dtype=torch.bool)
    fixed_zero = torch.zeros(rows, d, dtype=torch.bool)
    # fix one entry to one and one to zero in the first group (always feasible for keep ≥ 1, size−keep ≥ 1)
    g1 = pat.to_groups(fixed_one)
    g0 = pat.to_groups(fixed_zero)
    g1[0, 0] = True
    g0[0, 1] = True
    v = TopKLMO(pat, keep, fixed_one, fixed_zero)(grad)
    assert v.dtype == grad.dtype
    assert pat.counts_ok(v.bool(), keep)
    assert bool(v[fixed_one].eq(1).all()) and bool(v[fixed_zero].eq(0).all())
    # minimality within each group: no free kept entry has larger gradient than a free dropped one
    free = ~(fixed_one | fixed_zero)
    G_, V_, F_ = pat.to_groups(grad), pat.to_groups(v), pat.to_groups(free)
    for gi in range(G_.shape[0]):
        kept = G_[gi][(V_[gi] == 1) & F_[gi]]
        drop = G_[gi][(V_[gi] == 0) & F_[gi]]
        if len(kept) and len(drop):
            assert kept.max() <= drop.min()


def test_lmo_infeasible_bounds_raise():
    ones = torch.zeros(2, 4, dtype=torch.bool)
    ones[0, :3] = True
    with pytest.raises(InfeasibleBounds, match="fixes 3 entries to one"):
        TopKLMO("per_row", 2, fixed_one=ones)
    zeros = torch.zeros(2, 4, dtype=torch.bool)
    zeros[1, :3] = True
    with pytest.raises(InfeasibleBounds, match="to zero"):
        TopKLMO("per_row", 2, fixed_zero=zeros)(torch.zeros(2, 4))


@pytest.mark.parametrize("rows,d", [(3, 6)])
def test_exact_line_search_is_optimal(rows, d):
    W, G = random_problem(rows, d, 1)
    m = torch.full((rows, d), 0.5, dtype=torch.float64)
    v = TopKLMO("per_row", 3)(quad_grad(W, G, m))
    D = W * (v - m)
    RG = W @ G - (W * m) @ G
    gam = ExactLineSearch()(0, D, D @ G, RG, True)
    f = lambda g: quad_rows(W, G, m + g * (v - m))  # noqa: E731
    best = f(gam)
    for g in torch.linspace(0, 1, 101, dtype=torch.float64):
        assert bool((best <= f(g.expand(rows, 1)) + 1e-9).all())


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("step", [Agnostic(), ExactLineSearch()])
def test_fw_bounds_against_brute_force(pattern, step):
    rows, d = (2, 4) if pattern == "unstructured" else (3, 8)
    W, G = random_problem(rows, d, 7)
    pat = Pattern.parse(pattern)
    keep = _keep(pattern, rows, d)
    opt, _ = brute_force(W, G, pat, keep)
    lmo = TopKLMO(pat, keep)
    m0 = pat.topk_mask(W.abs() * G.diagonal().sqrt(), keep)
    res = frank_wolfe(W, G, lmo, m0, 300, step, rowwise=pat.rowwise)
    sums = pat.to_groups(res.m).sum(1)
    torch.testing.assert_close(sums, torch.full_like(sums, float(keep)))
    assert float(res.m.min()) >= -1e-12 and float(res.m.max()) <= 1 + 1e-12
    assert res.value <= opt + 1e-9  # converged relaxed value is below every mask's error
    assert res.lower_bound <= res.value + 1e-9
    assert res.lower_bound <= opt + 1e-9
    assert res.gap >= -1e-9


def test_fw_early_stop_and_history():
    W, G = random_problem(4, 8, 3)
    lmo = TopKLMO("per_row", 4)
    m0 = Pattern().topk_mask(W.abs(), 4)
    res = frank_wolfe(W, G, lmo, m0, 500, ExactLineSearch(), rtol=2e-2, history=True)
    assert res.iterations < 500
    assert res.gap <= 2e-2 * res.value + 1e-12
    assert len(res.history) == res.iterations + 1


def test_one_lmo_protocol_torch_and_numpy_oracles_agree():
    """TopKLMO (layers, torch) and MaskLMO / TileChunkLMO (one B&B row, NumPy) are one oracle: with the same node
    bounds they reach the same minimum ⟨g, v⟩ and return feasible vertices within the bounds."""
    import numpy as np

    from maskopt.solve.bnb.lmo import MaskLMO
    from maskopt.solve.fw.lmo import TopKLMO
    from maskopt.solve.patterns import Pattern

    rng = np.random.default_rng(0)
    for kind, d, keep, m in [("per_row", 24, 9, 0), ("nm", 24, 2, 4), ("cs256", 512, 136, 0)]:
        for _ in range(20):
            g = rng.standard_normal(d)
            lb = (rng.random(d) < 0.05).astype(float)
            ub = np.where(lb > 0, 1.0, (rng.random(d) > 0.1).astype(float))
            row = MaskLMO.for_pattern(d, kind, keep, m)
            if not row.feasible(lb, ub):
                continue
            v_np = row(g, lb, ub)
            pat = Pattern.parse({"per_row": "per_row", "nm": f"{keep}:{m}", "cs256": "cs256"}[kind])
            v_t = TopKLMO(pat, keep)(torch.from_numpy(g)[None], torch.from_numpy(lb)[None], torch.from_numpy(ub)[None])[0]
            assert float(g @ v_np) == pytest.approx(float(g @ v_t.numpy()), abs=1e-9)
            for v in (v_np, v_t.numpy()):
                assert np.all(v >= lb) and np.all(v <= ub)
                assert row.feasible(v, v)
