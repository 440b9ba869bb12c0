"""Exact B&B on mask rows against brute force (d ≤ 16), and its building blocks."""
from __future__ import annotations

import zlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from maskopt.testing import brute_force_row, row_masks
from maskopt.solve.bnb.lmo import MaskLMO
from maskopt.solve.bnb.local_search import swap_descent
from maskopt.solve.bnb.mask import jacobi_shift, row_error, row_objective, solve_row
from maskopt.solve.bnb.objectives import QuadraticObjective
from maskopt.solve.bnb.tree import BnBConfig
from maskopt.solve.fw.active_set import ActiveSet, bpcg


def make_instance(rng: np.random.Generator, d: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Random row with a Gram matrix of one of several flavours (well/ill-conditioned, ties)."""
    if kind == "wellcond":
        X = rng.standard_normal((d, 4 * d))
    elif kind == "lowrank":  # rank-deficient G (fewer tokens than inputs)
        X = rng.standard_normal((d, max(2, d // 3)))
    elif kind == "illcond":  # near-duplicate inputs and a dominant common direction
        X = rng.standard_normal((d, 3 * d))
        X[1] = X[0] + 1e-4 * rng.standard_normal(3 * d)
        X += 30.0 * rng.standard_normal(3 * d)[None, :]
    else:  # ties: quantized weights and duplicated inputs
        X = rng.standard_normal((d, 3 * d))
        X[d // 2 :] = X[: d - d // 2]
    G = X @ X.T
    w = rng.standard_normal(d)
    if kind == "ties":
        w = np.round(w * 2) / 2
    return w, G


@pytest.mark.parametrize("flavour", ["wellcond", "lowrank", "illcond", "ties"])
@pytest.mark.parametrize("pattern", ["per_row", "nm"])
def test_exact_matches_brute_force(flavour: str, pattern: str) -> None:
    rng = np.random.default_rng(zlib.crc32(f"{flavour}-{pattern}".encode()))  # hash() varies per process
    for t in range(6):
        d = int(rng.choice([8, 12, 16])) if pattern == "nm" else int(rng.integers(6, 15))
        w, G = make_instance(rng, d, flavour)
        keep = 2 if pattern == "nm" else int(rng.integers(1, d))
        lmo = MaskLMO.for_pattern(d, pattern, keep, 4)
        opt, _ = brute_force_row(w, G, pattern, keep, 4)
        tol = 1e-7 * max(opt, 1e-12) + 1e-9
        for kw in ({}, {"mu": 0.0, "local_search": False}):
            r = solve_row(w, G, lmo, **kw)
            assert r.status == "optimal"
            assert lmo.feasible(r.mask.astype(float), r.mask.astype(float))
            assert abs(r.error - opt) <= tol, (r.error, opt)
            assert r.lower_bound <= opt + tol and r.root_bound <= opt + tol
            assert r.gap <= 1e-5


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), d=st.integers(4, 13), sel=st.sampled_from(["best", "depth_then_best"]))
def test_exact_property(seed: int, d: int, sel: str) -> None:
    rng = np.random.default_rng(seed)
    w, G = make_instance(rng, d, ["wellcond", "lowrank", "illcond", "ties"][seed % 4])
    keep = int(rng.integers(1, d))
    lmo = MaskLMO.for_pattern(d, "per_row", keep)
    opt, _ = brute_force_row(w, G, "per_row", keep)
    r = solve_row(w, G, lmo, config=BnBConfig(selection=sel, dual_fixing=bool(seed % 2)), local_search=False)
    tol = 1e-7 * opt + 1e-9
    assert abs(r.error - opt) <= tol and r.lower_bound <= opt + tol


def test_limits_return_valid_mask_and_gap() -> None:
    rng = np.random.default_rng(7)
    d, keep = 16, 8
    w, G = make_instance(rng, d, "illcond")
    lmo = MaskLMO.for_pattern(d, "per_row", keep)
    opt, _ = brute_force_row(w, G, "per_row", keep)
    for cfg in (BnBConfig(node_limit=1), BnBConfig(node_limit=3), BnBConfig(time_limit=0.0)):
        r = solve_row(w, G, lmo, config=cfg, mu=0.0, local_search=False)
        assert r.mask.sum() == keep
        assert r.error == pytest.approx(row_error(w, G, r.mask))
        assert r.error >= opt * (1 - 1e-9)
        assert r.lower_bound <= opt * (1 + 1e-9)
        assert r.gap == pytest.approx((r.error - r.lower_bound) / r.error)
        assert r.status in ("node_limit", "time_limit", "optimal")
    assert solve_row(w, G, lmo, config=BnBConfig(node_limit=1), mu=0.0, local_search=False).status == "node_limit"


def test_reformulation_is_exact_on_masks_and_tighter() -> None:
    rng = np.random.default_rng(3)
    w, G = make_instance(rng, 10, "wellcond")
    mu = jacobi_shift(G)
    assert mu > 0
    assert np.linalg.eigvalsh(G - mu * np.diag(np.diag(G)))[0] >= -1e-9 * np.abs(G).max()
    f0, f1 = row_objective(w, G, 0.0), row_objective(w, G, mu)
    for v in row_masks(10, "per_row", 4):
        assert f1.value(v) == pytest.approx(row_error(w, G, v), rel=1e-9)
    x = rng.uniform(0, 1, 10)
    assert f1.value(x) >= f0.value(x) - 1e-9


def test_child_deltas_are_exact() -> None:
    rng = np.random.default_rng(1)
    d = 8
    for pattern, keep in (("per_row", 3), ("nm", 2)):
        lmo = MaskLMO.for_pattern(d, pattern, keep, 4)
        for _ in range(20):
            g = rng.standard_normal(d)
            lb, ub = np.zeros(d), np.ones(d)
            fix = rng.integers(0, d)
            (lb if rng.random() < 0.5 else ub)[fix] = 1.0 if lb[fix] == 0 and rng.random() < 0.5 else 0.0
            if not lmo.feasible(lb, ub):
                continue
            V = [v for v in row_masks(d, pattern, keep, 4) if np.all(v >= lb) and np.all(v <= ub)]
            base = min(g @ v for v in V)
            assert g @ lmo(g, lb, ub) == pytest.approx(base)
            d0, d1 = lmo.child_deltas(g, lb, ub)
            for j in np.flatnonzero(ub > lb):
                for val, delta in ((0.0, d0[j]), (1.0, d1[j])):
                    sub = [g @ v for v in V if v[j] == val]
                    want = min(sub) - base if sub else np.inf
                    assert delta == pytest.approx(want, abs=1e-12)


def test_swap_descent_never_worse_and_feasible() -> None:
    rng = np.random.default_rng(5)
    w, G = make_instance(rng, 12, "wellcond")
    lmo = MaskLMO.for_pattern(12, "nm", 2, 4)
    m0 = lmo(rng.standard_normal(12), np.zeros(12), np.ones(12))
    m1 = swap_descent(m0, w, G, lmo)
    assert lmo.feasible(m1, m1) and row_error(w, G, m1) <= row_error(w, G, m0) + 1e-12


def test_bpcg_bound_and_convergence() -> None:
    """min ‖x − c‖² over the probability simplex: bound ≤ optimum ≤ value, small gap."""
    rng = np.random.default_rng(0)
    d = 6
    c = rng.standard_normal(d)
    f = QuadraticObjective(np.eye(d), -2 * c, float(c @ c))
    lmo = lambda g: np.eye(d)[int(np.argmin(g))]
    res = bpcg(f, lmo, ActiveSet.vertex(np.eye(d)[0]), max_iter=500, gap_tol=1e-12)
    # exact projection onto the simplex
    u = np.sort(c)[::-1]
    css = np.cumsum(u) - 1
    k = np.flatnonzero(u - css / np.arange(1, d + 1) > 0)[-1]
    p = np.maximum(c - css[k] / (k + 1), 0)
    opt = float(((p - c) ** 2).sum())
    assert res.lower_bound <= opt + 1e-12 <= res.value + 2e-12
    assert res.value - opt < 1e-9
    assert abs(res.active.weights.sum() - 1) < 1e-12
