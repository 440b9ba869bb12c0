"""Screened 1-swap search: exactly the exhaustive search's best pair (random, ill-conditioned, correlated,
tied and real G; per-row and N:M), exact error tracking, monotone local search, memory cap helper."""
from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings, strategies as st

from maskopt.testing import random_problem
from conftest import TINY_LLAMA, needs_shared
from maskopt.solve.layer_math import residual_gram, row_errors
from maskopt.solve.patterns import Pattern
from maskopt.solve.problem import LayerProblem
from maskopt.solve.swaps import (SearchStats, accept_swaps, best_swaps_nm, block_swaps, best_swaps_per_row, memory_cap_bytes,
                                 pair_bound_factors, screened_swaps_per_row, swap_delta, swap_refine)

torch.set_num_threads(1)


def _gram(kind: str, d: int, seed: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, G) of a few kinds: 'random' (correlated inputs, outlier features), 'illcond' (near-collinear
    inputs spanning 12 orders of magnitude), 'ties' (quantized weights, duplicated input features)."""
    g = torch.Generator().manual_seed(seed)
    if kind == "random":
        W, G = random_problem(6, d, seed, dtype=torch.float64)
    elif kind == "illcond":
        W = torch.randn(6, d, generator=g, dtype=torch.float64)
        base = torch.randn(3, 4 * d, generator=g, dtype=torch.float64)
        X = torch.randn(d, 3, generator=g, dtype=torch.float64) @ base + 1e-6 * torch.randn(d, 4 * d, generator=g,
                                                                                              dtype=torch.float64)
        X = X * torch.logspace(-3, 3, d, dtype=torch.float64)[torch.randperm(d, generator=g)][:, None]
        G = X @ X.T
    else:  # ties
        W = torch.randint(-3, 4, (6, d), generator=g).to(torch.float64) / 2
        X = torch.randn(d // 2, 3 * d, generator=g, dtype=torch.float64)
        X = torch.cat([X, X])  # every input feature twice: equal G columns
        G = X @ X.T
    return W.to(dtype), G.to(dtype)


def _exhaustive_all(W, G, C, mask):
    """Every (p, u) pair's Δ by the swap_delta formula (reference, float64 check of the kernels)."""
    out = []
    for i in range(W.shape[0]):
        P = (~mask[i]).nonzero()[:, 0].tolist()
        K = mask[i].nonzero()[:, 0].tolist()
        out.append({(p, u): float(swap_delta(W[i : i + 1], G, C[i : i + 1], torch.tensor([p]), torch.tensor([u])))
                    for p, u in itertools.product(P, K)})
    return out


@settings(max_examples=20, deadline=None)
@given(kind=st.sampled_from(["random", "illcond", "ties"]), d=st.sampled_from([8, 16, 24]),
       frac=st.sampled_from([0.25, 0.5, 0.75]), dtype=st.sampled_from([torch.float64, torch.float32]),
       top=st.sampled_from([1, 4]), seed=st.integers(0, 10_000))
def test_screened_equals_exhaustive(kind, d, frac, dtype, top, seed):
    W, G = _gram(kind, d, seed, dtype)
    keep = int(frac * d)
    mask = Pattern().topk_mask(torch.rand(W.shape, generator=torch.Generator().manual_seed(seed)), keep)
    C = residual_gram(W, G, mask)
    b0, p0, u0 = best_swaps_per_row(W, G, C, mask, keep)
    stats = SearchStats()
    b1, p1, u1 = screened_swaps_per_row(W, G, C, mask, keep, top=top, probe=2, stats=stats)
    # the same Δ bits and the same pair (ties: smallest p, then u) as the exhaustive search
    assert torch.equal(b1[:, 0], b0)
    assert torch.equal(p1[:, 0], p0) and torch.equal(u1[:, 0], u0)
    assert stats.examined >= W.shape[0] and stats.total == W.shape[0] * keep * (d - keep)
    # the pair achieves its Δ, which is the minimum over all pairs (float64 reference)
    ref = _exhaustive_all(W.double(), G.double(), C.double(), mask)
    for i in range(W.shape[0]):
        assert not mask[i, p1[i, 0]] and mask[i, u1[i, 0]]
        best = min(ref[i].values())
        scale = max(abs(v) for v in ref[i].values()) + 1e-300
        assert abs(ref[i][(int(p1[i, 0]), int(u1[i, 0]))] - best) <= 1e-5 * scale
        # further columns: real pairs with their own Δ, pairwise disjoint, sorted
        fin = torch.isfinite(b1[i])
        assert bool((b1[i, fin][1:] >= b1[i, fin][:-1]).all())
        ps, us = p1[i, fin].tolist(), u1[i, fin].tolist()
        assert len(set(ps)) == len(ps) and len(set(us)) == len(us)
        for j in range(int(fin.sum())):
            assert ref[i][(ps[j], us[j])] == pytest.approx(float(b1[i, j]), rel=1e-4, abs=1e-6 * scale)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_screened_tau_cutoff(dtype):
    W, G = _gram("random", 24, 3, dtype)
    mask = Pattern().topk_mask(W.abs(), 12)
    C = residual_gram(W, G, mask)
    b0, _, _ = best_swaps_per_row(W, G, C, mask, 12)
    tau = b0.clone()
    tau[::2] = b0[::2] - 1.0  # below the best: nothing to find
    b1, _, _ = screened_swaps_per_row(W, G, C, mask, 12, tau=tau)
    assert bool(torch.isinf(b1[::2, 0]).all())
    assert torch.equal(b1[1::2, 0], b0[1::2])


@settings(max_examples=15, deadline=None)
@given(pattern=st.sampled_from(["2:4", "1:4", "4:8", "3:8"]), kind=st.sampled_from(["random", "ties"]),
       seed=st.integers(0, 10_000))
def test_nm_search_exact(pattern, kind, seed):
    pat = Pattern.parse(pattern)
    W, G = _gram(kind, 16, seed, torch.float64)
    mask = pat.topk_mask(torch.rand(W.shape, generator=torch.Generator().manual_seed(seed)), pat.n)
    C = residual_gram(W, G, mask)
    bd, bp, bu = best_swaps_nm(W, G, C, mask, pat.m, top=3)
    ref = _exhaustive_all(W, G, C, mask)
    for i in range(W.shape[0]):
        inblock = {k: v for k, v in ref[i].items() if k[0] // pat.m == k[1] // pat.m}
        best = min(inblock.values())
        assert float(bd[i, 0]) == pytest.approx(best, rel=1e-12, abs=1e-9)
        tol = 1e-9 * max(abs(v) for v in inblock.values()) + 1e-12
        tied = {k for k, v in inblock.items() if v <= best + tol}  # exact ties may be broken by rounding
        assert (int(bp[i, 0]), int(bu[i, 0])) in tied
        blocks = [int(p) // pat.m for p in bp[i]]
        assert len(set(blocks)) == len(blocks)  # one pair per block: disjoint
        assert bool((bd[i, 1:] >= bd[i, :-1]).all())


def test_pair_bound_factors_hold():
    g = torch.Generator().manual_seed(0)
    for G in (random_problem(1, 20, 1)[1],
              torch.randn(12, 12, generator=g, dtype=torch.float64),  # not PSD, not symmetric
              torch.zeros(5, 5, dtype=torch.float64).index_fill_(0, torch.tensor([1]), 2.0)):  # zero diagonal
        h = pair_bound_factors(G).double()
        off = ~torch.eye(G.shape[0], dtype=torch.bool)
        assert bool((G.abs()[off] <= (h[:, None] * h[None, :])[off]).all())


@settings(max_examples=15, deadline=None)
@given(pattern=st.sampled_from(["per_row", "2:4"]), seed=st.integers(0, 10_000), J=st.integers(1, 6))
def test_accept_swaps_change_is_exact(pattern, seed, J):
    W, G = random_problem(5, 16, seed)
    pat = Pattern.parse(pattern)
    keep = pat.keep_per_group(5, 16, 0.5)
    mask = pat.topk_mask(W.abs(), keep)
    C = residual_gram(W, G, mask)
    if pat.kind == "nm":
        bd, bp, bu = best_swaps_nm(W, G, C, mask, pat.m, top=J)
    else:
        bd, bp, bu = screened_swaps_per_row(W, G, C, mask, keep, top=J)
    acc, change, d0 = accept_swaps(W, G, C, bp, bu, torch.isfinite(bd), torch.zeros(5, dtype=torch.float64))
    new = mask.clone()
    for i, j in acc.nonzero().tolist():
        new[i, bp[i, j]], new[i, bu[i, j]] = True, False
    assert pat.counts_ok(new, keep)
    diff = row_errors(W, G, new) - row_errors(W, G, mask)
    torch.testing.assert_close(change, diff, rtol=1e-9, atol=1e-9)
    assert bool((change <= 0).all())
    torch.testing.assert_close(d0, swap_delta(W, G, C, bp[:, 0], bu[:, 0]), rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("pattern", ["per_row", "2:4"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_refine_tracks_error_and_matches_exhaustive(pattern, dtype):
    W, G = random_problem(24, 32, 8, dtype=dtype)
    pr = LayerProblem(W, G, pattern, 0.5)
    m0 = pr.pattern.topk_mask(W.abs() * G.diagonal().sqrt(), pr.keep)
    ex = swap_refine(W, G, m0, pr.pattern, pr.keep, search="exhaustive", swaps_per_iter=1, tol=0.0)
    sc = swap_refine(W, G, m0, pr.pattern, pr.keep, search="screened", swaps_per_iter=1, tol=0.0)
    assert torch.equal(ex.mask, sc.mask) and ex.iterations == sc.iterations  # same trajectory
    assert sc.pairs_examined <= sc.pairs_total
    fast = swap_refine(W, G, m0, pr.pattern, pr.keep)  # defaults: several swaps per iteration, tol
    for r in (ex, sc, fast):
        assert pr.is_feasible(r.mask)
        torch.testing.assert_close(r.errors, pr.row_errors(r.mask), rtol=1e-9, atol=1e-6)
        torch.testing.assert_close(r.initial_errors, pr.row_errors(m0), rtol=1e-9, atol=1e-6)
        assert bool((r.errors <= r.initial_errors).all())
        assert int(r.converged.sum() + r.stopped_early.sum()) == 24  # ran until every row retired
    assert bool(ex.converged.all())


def test_error_never_increases_per_iteration():
    W, G = random_problem(16, 24, 2)
    pr = LayerProblem(W, G, "per_row", 0.6)
    mask = pr.topk(W.abs())
    prev = pr.row_errors(mask)
    for _ in range(6):
        mask = swap_refine(W, G, mask, pr.pattern, pr.keep, max_iter=1, swaps_per_iter=4).mask
        now = pr.row_errors(mask)
        assert bool((now <= prev + 1e-12).all())
        prev = now


def test_memory_cap_and_option_errors():
    cap = memory_cap_bytes("cpu", 0.25)
    assert 0 < cap < 2**50
    with pytest.raises(ValueError, match="fraction"):
        memory_cap_bytes("cpu", 0.0)
    W, G = random_problem(2, 8, 0)
    m = Pattern().topk_mask(W.abs(), 4)
    with pytest.raises(ValueError, match="search"):
        swap_refine(W, G, m, Pattern(), 4, search="fast")
    with pytest.raises(ValueError, match="swaps_per_iter"):
        swap_refine(W, G, m, Pattern(), 4, swaps_per_iter=0)
    with pytest.raises(ValueError, match="tol"):
        swap_refine(W, G, m, Pattern(), 4, tol=-1.0)


@pytest.fixture(scope="module")
def tiny_block0():
    """{name: (W, G)} of block 0 of the real tiny Llama (maskopt's own calibration on 8 × 128 tokens)."""
    from maskopt.data import calibration_windows, tokenize
    from maskopt.model.adapters import get_adapter
    from maskopt.model.calibrate import capture_block_inputs, collect_grams
    from maskopt.model.loading import load_model

    model, tok = load_model(TINY_LLAMA)
    adapter = get_adapter(model)
    text = (TINY_LLAMA.parent.parent / "data" / "english-heldout" / "test.txt").read_text()[:200_000]
    windows = calibration_windows(tokenize(tok, text), 4, 128, 0)
    batches = capture_block_inputs(model, adapter, windows, torch.device("cpu"))
    block = adapter.get_blocks(model)[0]
    grams = collect_grams(block, adapter, batches, torch.device("cpu"))
    return {n: (adapter.get_weight(m).detach().float()[:24].clone(), grams[n].float())
            for n, m in adapter.linears(block).items()}


@needs_shared
@pytest.mark.parametrize("pattern", ["per_row", "2:4"])
def test_real_layers_screened_vs_exhaustive(tiny_block0, pattern):
    """On every layer of the tiny model's block 0 (24 rows each): the screened search reproduces the
    exhaustive local search exactly, and the default (several swaps, tol) is never worse than Wanda."""
    for name, (W, G) in tiny_block0.items():
        pr = LayerProblem(W, G, pattern, 0.5, name=name)
        m0 = pr.pattern.topk_mask(W.abs() * G.diagonal().sqrt(), pr.keep)
        C = residual_gram(W, G, m0)
        if pattern == "per_row":
            b0, p0, u0 = best_swaps_per_row(W, G, C, m0, pr.keep)
            b1, p1, u1 = screened_swaps_per_row(W, G, C, m0, pr.keep)
            assert torch.equal(b0, b1[:, 0]) and torch.equal(p0, p1[:, 0]) and torch.equal(u0, u1[:, 0]), name
        ex = swap_refine(W, G, m0, pr.pattern, pr.keep, search="exhaustive", swaps_per_iter=1, tol=0.0)
        sc = swap_refine(W, G, m0, pr.pattern, pr.keep, search="screened", swaps_per_iter=1, tol=0.0)
        assert torch.equal(ex.mask, sc.mask), name
        fast = swap_refine(W, G, m0, pr.pattern, pr.keep)
        assert pr.error(fast.mask) <= pr.error(m0)


def test_block_swaps_never_reuses_a_used_pair():
    """A one-pair block (cs256 tiles) has nothing left after its first swap: swapping back would be priced
    with the wrong formula (p is kept now) and break the tracked error."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(512, 400, generator=g, dtype=torch.float64) * torch.rand(512, 1, generator=g, dtype=torch.float64) * 3
    W = torch.randn(3, 512, generator=g, dtype=torch.float64)
    G = X @ X.T
    pat = Pattern.parse("cs256")
    keep = pat.keep_per_group(3, 512, 0.5)
    mask = pat.topk_mask(W.abs() * G.diagonal().sqrt(), keep)
    res = swap_refine(W.float(), G.float(), mask, pat, keep, swaps_per_iter=16)
    W32, G32 = W.float().double(), G.float().double()  # the problem swap_refine saw
    assert float(res.errors.sum()) == pytest.approx(float(row_errors(W32, G32, res.mask).sum()), rel=1e-9)
    C = residual_gram(W, G, mask)
    bd, bp, bu = best_swaps_per_row(W, G, C, mask, keep, block=256)
    taken, _, _, _ = block_swaps(W, G, C, bp[:, None], bu[:, None], torch.zeros(3, dtype=torch.float64), 4)
    assert not taken[:, 1:].any()
