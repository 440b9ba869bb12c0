"""The optimised-shift mask bound and the refit bound never exceed the optimum (brute force d ≤ 16, SCIP d ≤ 40)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from maskopt.certify.bounds import _scaled_corr, certify_layer, relaxation_bound
from maskopt.certify.refit import _ksupport_sq, ksupport_prox, refit_bound, refit_certificate
from maskopt.certify.shift import certified_shift, inverse_diagonal_shift, optimise_shift, refine_groups
from maskopt.solve.problem import LayerProblem

try:
    from maskopt.testing import brute_force_row
except ImportError:  # older layout
    from maskopt.solve.oracles import brute_force_row


def instance(seed: int, rows: int, d: int, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, G): 'random', 'ill' (near-duplicate inputs, one dominant direction, scales over 4 decades),
    'lowrank' (fewer tokens than inputs), 'dead' (an input that is always zero)."""
    g = torch.Generator().manual_seed(seed)
    n = d // 2 if kind == "lowrank" else 3 * d
    X = torch.randn(d, n, generator=g, dtype=torch.float64)
    if kind == "ill":
        X = X + 40.0 * torch.randn(1, n, generator=g, dtype=torch.float64)
        X[1] = X[0] + 1e-4 * torch.randn(n, generator=g, dtype=torch.float64)
        X = X * torch.logspace(-2, 2, d, dtype=torch.float64)[torch.randperm(d, generator=g)][:, None]
    if kind == "dead":
        X[3] = 0.0
    W = torch.randn(rows, d, generator=g, dtype=torch.float64)
    return W, X @ X.T


def mask_optima(p: LayerProblem) -> torch.Tensor:
    k = p.pattern.kind
    return torch.tensor([brute_force_row(p.W[i].numpy(), p.G.numpy(), k, p.keep, p.pattern.m)[0] for i in range(p.rows)])


def refit_optima(p: LayerProblem) -> torch.Tensor:
    """min over the pattern's kept sets K of min_v (w − v)ᵀG(w − v), v on K: wᵀGw − bᵀG_KK⁻¹b, b = (Gw)_K (pinv)."""
    d, G = p.d, p.G.double()
    if p.pattern.kind == "nm":
        blocks = list(itertools.combinations(range(p.pattern.m), p.keep))
        sets = [sum(([b * p.pattern.m + i for i in c] for b, c in enumerate(ch)), [])
                for ch in itertools.product(blocks, repeat=d // p.pattern.m)]
    else:
        sets = [list(c) for c in itertools.combinations(range(d), p.keep)]
    out = []
    for w in p.W.double():
        Gw = G @ w
        out.append(max(min(float(w @ Gw - Gw[K] @ torch.linalg.pinv(G[K][:, K]) @ Gw[K]) for K in sets), 0.0))
    return torch.tensor(out)


CASES = [("random", "per_row", 0.5), ("ill", "per_row", 0.5), ("lowrank", "2:4", 0.5), ("dead", "per_row", 0.6),
         ("ill", "2:4", 0.5)]


@pytest.mark.parametrize("kind,pattern,sparsity", CASES)
def test_opt_and_refit_bounds_below_brute_force(kind: str, pattern: str, sparsity: float) -> None:
    W, G = instance(len(kind) + 7 * len(pattern), 3, 12, kind)
    p = LayerProblem(W.float(), G.float(), pattern, sparsity)  # float32 inputs, as in a pruning run
    p64 = LayerProblem(p.W.double(), p.G.double(), pattern, sparsity)
    mopt, ropt = mask_optima(p64), refit_optima(p64)
    dense = (p64.W @ p64.G * p64.W).sum(1)  # rounding of the enumerated least squares scales with wᵀGw
    assert torch.all(ropt <= mopt + 1e-7 * dense)
    tol = lambda x: 1e-7 * x + 1e-7 * dense  # noqa: E731
    b, S, assign, Z, info = optimise_shift(p, rounds=3)
    assert torch.all(b <= mopt + tol(mopt)), (b - mopt)
    deep, *_ = refine_groups(p, b, S[0], Z, 2, rounds=2)
    assert torch.all(deep <= mopt + tol(mopt)) and torch.all(deep >= b - 1e-12)
    rb, rinfo = refit_bound(p, S[0], iterations=400)
    assert torch.all(rb <= ropt + tol(ropt)), (rb - ropt)
    c = certify_layer(p, p.topk(p.W.abs()))
    assert c.info["shift"] == "opt"
    assert torch.all(c.row_bounds <= mopt + tol(mopt))
    assert c.info["refit_lower_bound"] <= float((ropt + tol(ropt)).sum())
    assert 0.0 <= c.info["refit_gap"] <= 1.0 and 0.0 <= c.gap <= 1.0


def test_opt_bound_beats_jacobi_on_correlated_inputs() -> None:
    """A few inputs that are near-combinations of others force the Jacobi shift to ~0; the optimised shift does not."""
    g = torch.Generator().manual_seed(3)
    X = torch.randn(16, 64, generator=g, dtype=torch.float64)
    X[1] = X[0] + 0.05 * torch.randn(64, generator=g, dtype=torch.float64)  # a near-duplicate pair
    X[2] = X[3] - X[4] + 0.05 * torch.randn(64, generator=g, dtype=torch.float64)
    W, G = torch.randn(4, 16, generator=g, dtype=torch.float64), X @ X.T
    p = LayerProblem(W, G, "per_row", 0.5)
    opt = mask_optima(p)
    jac, _ = relaxation_bound(p, shift="jacobi", dtype=torch.float64, iterations=600, tol=1e-6)
    new, info = relaxation_bound(p, dtype=torch.float64, iterations=600, tol=1e-6)
    assert float(new.sum()) > 1.1 * float(jac.sum()), (float(new.sum()), float(jac.sum()))
    assert torch.all(new <= opt * (1 + 1e-9) + 1e-12)


def test_unstructured_bounds_below_enumeration() -> None:
    W, G = instance(9, 2, 6, "random")
    p = LayerProblem(W, G, "unstructured", 0.5)
    mopt = ropt = float("inf")
    for idx in itertools.combinations(range(12), p.keep):
        M = torch.zeros(12, dtype=torch.bool)
        M[list(idx)] = True
        M = M.reshape(2, 6)
        mopt = min(mopt, p.error(M))
        r = 0.0
        for i in range(2):
            K = M[i].nonzero().flatten()
            Gw = G @ W[i]
            r += float(W[i] @ Gw - (Gw[K] @ torch.linalg.pinv(G[K][:, K]) @ Gw[K] if len(K) else 0.0))
        ropt = min(ropt, r)
    b, S, *_ = optimise_shift(p, rounds=2)
    assert b.numel() == 1 and float(b) <= mopt * (1 + 1e-9)
    rb, _ = refit_bound(p, S[0], iterations=300)
    assert rb.numel() == 1 and float(rb) <= ropt * (1 + 1e-9)
    with pytest.raises(ValueError):
        optimise_shift(p, shifts=S.expand(2, -1), assign=torch.tensor([0, 1]))


def test_certified_shifts_are_psd() -> None:
    for kind in ("random", "ill", "lowrank", "dead"):
        _, G = instance(11, 1, 10, kind)
        C, _ = _scaled_corr(G)
        s = inverse_diagonal_shift(C)
        assert torch.linalg.eigvalsh(C - torch.diag(s))[0] >= 0
        s2 = certified_shift(C, s + 0.3)  # infeasible on purpose: lowered until PSD
        assert torch.linalg.eigvalsh(C - torch.diag(s2))[0] >= 0


def test_ksupport_prox_and_norm() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4, 9, generator=g, dtype=torch.float64)
    assert torch.allclose(_ksupport_sq(a * a, 1), a.abs().sum(1) ** 2)  # k = 1: (Σ|a|)²
    assert torch.allclose(_ksupport_sq(a * a, 9), (a * a).sum(1))  # k = n: ‖a‖²
    B = torch.randn(5, 9, generator=g, dtype=torch.float64)
    for k, lam in ((3, 0.2), (1, 1.0), (8, 0.05)):
        A, _ = ksupport_prox(B, k, lam)
        obj = lambda X: 0.5 * ((X - B) ** 2).sum(1) + lam * _ksupport_sq(X * X, k)  # noqa: E731
        base = obj(A)
        for _ in range(50):  # the prox is the minimiser: no perturbation does better
            assert torch.all(obj(A + 1e-3 * torch.randn(A.shape, generator=g, dtype=torch.float64)) >= base - 1e-12)


def test_refit_certificate_of_shipped_weights() -> None:
    W, G = instance(5, 3, 12, "random")
    p = LayerProblem(W, G, "per_row", 0.5)
    mask = p.topk(W.abs())
    b, S, assign, Z, _ = optimise_shift(p)
    # the least-squares refit of the mask: the shipped weights of a --refit run
    Wr = torch.zeros_like(W)
    for i in range(3):
        K = mask[i].nonzero().flatten()
        Wr[i, K] = torch.linalg.solve(G[K][:, K], (G @ W[i])[K])
    _, info_mask = refit_certificate(p, mask, None, (S, assign, Z))
    _, info_refit = refit_certificate(p, mask, Wr, (S, assign, Z))
    assert info_mask["shipped_error"] == pytest.approx(p.error(mask))
    assert info_refit["shipped_error"] < info_mask["shipped_error"]
    assert info_refit["refit_lower_bound"] == pytest.approx(info_mask["refit_lower_bound"], rel=0.05)
    assert info_refit["refit_gap"] < info_mask["refit_gap"]


def test_bounds_below_scip() -> None:
    """d = 24 and 32 (SCIP's MIQP proves the mask optimum); refit: below SCIP's incumbent at d = 40."""
    pytest.importorskip("pyscipopt")
    try:
        from maskopt.testing import scip_row
    except ImportError:
        from maskopt.solve.oracles import scip_row
    rng = np.random.default_rng(4)
    for d, kind, keep in ((24, "per_row", 12), (32, "nm", 2)):
        X = rng.standard_normal((d, 4 * d)) * rng.uniform(0.3, 3.0, (d, 1))
        X += 0.5 * rng.standard_normal((1, 4 * d)) * rng.uniform(0.5, 1.5, (d, 1))
        w, G = rng.standard_normal(d), X @ X.T
        ref = scip_row(w, G, kind, keep, 4, time_limit=6.0)
        p = LayerProblem(torch.from_numpy(w)[None, :], torch.from_numpy(G), "per_row" if kind == "per_row" else "2:4", 0.5)
        b, S, *_ = optimise_shift(p, rounds=3)
        assert float(b) <= ref["value"] * (1 + 1e-7), (float(b), ref)
        rb, _ = refit_bound(p, S[0], iterations=300)
        assert float(rb) <= ref["value"] * (1 + 1e-7)  # the refit optimum is never above the mask optimum
    from pyscipopt import Model, quicksum

    d = 40
    X = rng.standard_normal((d, 3 * d)) * rng.uniform(0.3, 3.0, (d, 1))
    w, G = rng.standard_normal(d), X @ X.T
    m = Model()
    m.hideOutput()
    m.setParam("limits/time", 1.0)
    z = [m.addVar(vtype="B") for _ in range(d)]  # pruned
    v = [m.addVar(lb=None) for _ in range(d)]
    t = m.addVar(lb=0.0)
    m.addCons(quicksum(z) == d // 2)
    for j in range(d):
        m.addConsIndicator(v[j] <= 0, z[j])
        m.addConsIndicator(-v[j] <= 0, z[j])
    m.addCons(quicksum(G[i, j] * (w[i] - v[i]) * (w[j] - v[j]) for i in range(d) for j in range(d)) <= t)
    m.setObjective(t, "minimize")
    m.optimize()
    p = LayerProblem(torch.from_numpy(w)[None, :], torch.from_numpy(G), "per_row", 0.5)
    _, S, *_ = optimise_shift(p)
    rb, _ = refit_bound(p, S[0], iterations=300)
    assert float(rb) <= m.getObjVal() * (1 + 1e-7)


def test_time_budget_deepens_the_worst_layer_and_stays_valid() -> None:
    from maskopt.certify.budget import GapBudget, deepen

    problems = []
    for seed, kind in ((21, "ill"), (22, "random")):
        W, G = instance(seed, 3, 12, kind)
        problems.append(LayerProblem(W.float(), G.float(), "per_row", 0.5, name=f"layer{seed}"))
    budget = GapBudget(seconds=3.0, min_gain=0.0)
    certs = {}
    for p in problems:
        mask = p.topk(p.W.abs())
        c = certify_layer(p, mask, refit_iterations=20)
        certs[p.name] = (c, mask)
        budget.offer(p.name, p, mask, c)
    first = budget.log
    out = budget.spend()
    assert out and budget.log and first is budget.log
    worst = max(certs, key=lambda n: max(certs[n][0].gap, certs[n][0].info["refit_gap"]))
    assert budget.log[0]["layer"] == worst  # the largest gap goes first
    for p in problems:
        c0, mask = certs[p.name]
        c = out.get(p.name, c0)
        p64 = LayerProblem(p.W.double(), p.G.double(), "per_row", 0.5)
        mopt, ropt = mask_optima(p64), refit_optima(p64)
        dense = (p64.W @ p64.G * p64.W).sum(1)
        assert c.gap <= c0.gap + 1e-12 and c.info["refit_gap"] <= c0.info["refit_gap"] + 1e-12
        assert torch.all(c.row_bounds <= mopt + 1e-7 * mopt + 1e-7 * dense)
        assert c.info["refit_lower_bound"] <= float(ropt.sum() + 1e-7 * dense.sum())
    with pytest.raises(ValueError):  # a Jacobi certificate keeps no shift state to continue from
        deepen(problems[1], certs[problems[1].name][1], certify_layer(problems[1], certs[problems[1].name][1], shift="jacobi"))
