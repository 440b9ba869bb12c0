"""certify_layer: the bound never exceeds the brute-force optimum; B&B rows deepen it."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from maskopt.testing import brute_force_row
from maskopt.certify.bounds import _relaxed, certify_layer, jacobi_shift, relaxation_bound, rowwise_shifts
from maskopt.solve.problem import LayerProblem


def layer(seed: int, rows: int, d: int, ill: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(d, 3 * d, generator=g, dtype=torch.float64)
    if ill:
        X = X + 20.0 * torch.randn(1, 3 * d, generator=g, dtype=torch.float64)
        X[1] = X[0] + 1e-4 * torch.randn(3 * d, generator=g, dtype=torch.float64)
    return torch.randn(rows, d, generator=g, dtype=torch.float64), X @ X.T


def row_optima(p: LayerProblem) -> np.ndarray:
    kind = p.pattern.kind
    return np.array([
        brute_force_row(p.W[i].numpy(), p.G.numpy(), kind, p.keep, p.pattern.m)[0] for i in range(p.rows)
    ])


@pytest.mark.parametrize("pattern", ["per_row", "2:4"])
@pytest.mark.parametrize("ill", [False, True])
def test_root_bound_below_optimum(pattern: str, ill: bool) -> None:
    W, G = layer(1 + ill, 3, 12, ill)
    p = LayerProblem(W, G, pattern, 0.5)
    opt = row_optima(p)
    mask = p.topk(W.abs())
    c = certify_layer(p, mask, iterations=150)
    assert c.lower_bound <= opt.sum() * (1 + 1e-9)
    assert torch.all(c.row_bounds <= torch.tensor(opt) * (1 + 1e-9) + 1e-12)
    assert c.error == pytest.approx(p.error(mask))
    assert c.gap == pytest.approx((c.error - c.lower_bound) / c.error)
    assert 0 <= c.gap <= 1  # the root bound may be weak (0) on ill-conditioned G
    # deeper bounds for all rows: proven optimal, bound = optimum
    deep = certify_layer(p, mask, iterations=50, rows=range(p.rows), bnb_time_limit=10.0)
    assert deep.rows_optimal == p.rows and deep.method == "root+bnb"
    assert deep.lower_bound == pytest.approx(opt.sum(), rel=1e-5)
    assert deep.lower_bound <= opt.sum() * (1 + 1e-9)
    assert torch.all(deep.row_bounds >= c.row_bounds - 1e-12)


def test_unstructured_bound_below_optimum() -> None:
    W, G = layer(4, 2, 6)
    p = LayerProblem(W, G, "unstructured", 0.5)
    best = min(
        p.error(torch.tensor(np.isin(np.arange(12), idx).reshape(2, 6)))
        for idx in itertools.combinations(range(12), p.keep)
    )
    c = certify_layer(p, p.topk(W.abs()), iterations=200)
    assert c.lower_bound <= best * (1 + 1e-9)
    assert c.row_bounds is None
    with pytest.raises(ValueError):
        certify_layer(p, p.topk(W.abs()), rows=[0])


def test_optimal_mask_has_zero_gap_and_bad_mask_is_rejected() -> None:
    W, G = layer(5, 3, 8)
    p = LayerProblem(W, G, "per_row", 0.5)
    opt_masks = torch.tensor(np.array([
        brute_force_row(p.W[i].numpy(), p.G.numpy(), "per_row", p.keep)[1] for i in range(3)
    ]) > 0.5)
    c = certify_layer(p, opt_masks, iterations=20, rows=[0, 1, 2], bnb_time_limit=10.0)
    assert c.gap <= 1e-5
    with pytest.raises(ValueError):
        certify_layer(p, torch.ones(3, 8, dtype=torch.bool))


def test_jacobi_shift_keeps_psd_with_dead_inputs() -> None:
    W, G = layer(6, 1, 7)
    G[3, :] = 0
    G[:, 3] = 0
    mu = jacobi_shift(G)
    assert mu > 0
    assert torch.linalg.eigvalsh(G - mu * torch.diag(G.diagonal()))[0] >= -1e-9 * G.abs().max()
    p = LayerProblem(W.float(), G.float(), "per_row", 0.5)  # float32 inputs work too
    c = certify_layer(p, p.topk(W.abs().float()), iterations=30)
    assert c.lower_bound <= c.error


def random_instance(seed: int, rows: int, d: int, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Random (W, G): 'plain', 'ill' (near-collinear inputs) or 'outlier' (a few huge, correlated features)."""
    g = torch.Generator().manual_seed(seed)
    n = 2 * d
    X = torch.randn(d, n, generator=g, dtype=torch.float64)
    if kind == "ill":
        X = X + 5.0 * torch.randn(1, n, generator=g, dtype=torch.float64)
        X[1] = X[0] + 1e-3 * torch.randn(n, generator=g, dtype=torch.float64)
    elif kind == "outlier":
        common = torch.randn(1, n, generator=g, dtype=torch.float64)
        X[:2] = 30.0 * common + X[:2]
        X = X + 0.8 * torch.randn(1, n, generator=g, dtype=torch.float64)
    W = torch.randn(rows, d, generator=g, dtype=torch.float64) * torch.rand(1, d, generator=g, dtype=torch.float64).add(0.2)
    return W, X @ X.T


def test_rowwise_shift_valid_and_no_weaker_than_jacobi() -> None:
    """Brute force on many small instances: both reformulations give LB ≤ optimum per row;
    the per-row optimised shift (default) is never below the Jacobi one and above it on most."""
    better = total = 0
    for seed in range(12):
        kind = ("plain", "ill", "outlier")[seed % 3]
        pattern = "per_row" if seed % 2 == 0 else "2:4"
        W, G = random_instance(100 + seed, 4, 12, kind)
        p = LayerProblem(W, G, pattern, 0.5)
        opt = torch.tensor(row_optima(p))
        old, _ = relaxation_bound(p, iterations=100, shift="jacobi")
        new, info = relaxation_bound(p, iterations=100, shift="rowwise")
        assert info["shift"] == "rowwise"
        tol = 1e-9 * opt + 1e-12
        assert torch.all(old <= opt + tol) and torch.all(new <= opt + tol), (seed, kind, pattern)
        assert torch.all(new >= old - 1e-12)
        better += int((new > old * (1 + 1e-6) + 1e-12).sum())
        total += p.rows
    assert better >= total // 2, (better, total)


def test_rowwise_shift_is_psd() -> None:
    W, G = random_instance(7, 5, 10, "outlier")
    G[4, :] = 0
    G[:, 4] = 0  # a dead input
    W[0, 2] = 0.0  # a zero weight
    p = LayerProblem(W, G, "per_row", 0.5)
    _, Z, _ = _relaxed(p, jacobi_shift(G) * W * W * G.diagonal(), 50, 10, None)
    for delta in rowwise_shifts(p, Z, jacobi_shift(G)):
        for i in range(p.rows):
            Q = W[i, :, None] * G * W[i, None, :] - torch.diag(delta[i])
            assert torch.linalg.eigvalsh(Q)[0] >= -1e-10 * Q.abs().max()


def test_unstructured_rowwise_bound_below_optimum() -> None:
    W, G = random_instance(9, 2, 6, "outlier")
    p = LayerProblem(W, G, "unstructured", 0.5)
    best = min(
        p.error(torch.tensor(np.isin(np.arange(12), idx).reshape(2, 6)))
        for idx in itertools.combinations(range(12), p.keep)
    )
    new, _ = relaxation_bound(p, iterations=150, shift="rowwise")
    old, _ = relaxation_bound(p, iterations=150, shift="jacobi")
    assert float(new.sum()) <= best * (1 + 1e-9)
    assert float(new.sum()) >= float(old.sum()) - 1e-12
    c = certify_layer(p, p.topk(W.abs()), iterations=150, shift="jacobi")
    assert c.info["shift"] == "jacobi"


def conditioned_instance(seed: int, rows: int, d: int, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, G) with G random, ill-conditioned (λ_max/λ_min ≈ 1e8: near-duplicate inputs, one dominant
    direction, scales spanning 1e-2…1e2), or rank-deficient (fewer tokens than inputs)."""
    g = torch.Generator().manual_seed(seed)
    n = d // 2 if kind == "lowrank" else 3 * d
    X = torch.randn(d, n, generator=g, dtype=torch.float64)
    if kind == "ill":
        X = X + 40.0 * torch.randn(1, n, generator=g, dtype=torch.float64)
        X[1] = X[0] + 1e-4 * torch.randn(n, generator=g, dtype=torch.float64)
        X = X * torch.logspace(-2, 2, d, dtype=torch.float64)[torch.randperm(d, generator=g)][:, None]
    W = torch.randn(rows, d, generator=g, dtype=torch.float64)
    return W, X @ X.T


@pytest.mark.parametrize("kind", ["random", "ill", "lowrank"])
@pytest.mark.parametrize("pattern", ["per_row", "2:4", "60%"])
def test_default_bound_below_brute_force(kind: str, pattern: str) -> None:
    """The default certificate (optimised shift, float32 iterations with early stop, float64 bound, refit bound),
    the Jacobi and the 'layer' shifts never exceed the brute-force optimum of any row, on random and
    ill-conditioned G."""
    sparsity = 0.6 if pattern == "60%" else 0.5
    pattern = "per_row" if pattern == "60%" else pattern
    for seed in range(3):
        W, G = conditioned_instance(10 * seed + len(kind), 4, 12, kind)
        if kind == "ill":
            assert float(torch.linalg.cond(G)) > 1e6
        p = LayerProblem(W.float(), G.float(), pattern, sparsity)  # float32 inputs, as in a pruning run
        opt = torch.tensor(row_optima(LayerProblem(p.W.double(), p.G.double(), pattern, sparsity)))
        tol = 1e-9 * opt + 1e-12
        c = certify_layer(p, p.topk(p.W.abs()))
        assert c.info["shift"] == "opt" and c.info["dtype"] == "float32"
        assert torch.all(c.row_bounds <= opt + tol), (seed, c.row_bounds - opt)
        assert c.lower_bound <= float(opt.sum()) * (1 + 1e-9)
        cj = certify_layer(p, p.topk(p.W.abs()), shift="jacobi", refit=False)
        assert cj.info["shift"] == "jacobi" and torch.all(cj.row_bounds <= opt + tol)
        layer, info = relaxation_bound(p, shift="layer")
        assert info["shift"] == "layer"
        assert torch.all(layer <= opt + tol), (seed, layer - opt)
        jac, _ = relaxation_bound(p, shift="jacobi")
        assert torch.all(layer >= jac - 1e-12)  # layer starts from the Jacobi bound, per row the better


def test_default_bound_is_the_jacobi_relaxation() -> None:
    """float32 iterations + early stop give the same bound as long float64 runs, within 1% of its value."""
    W, G = random_instance(21, 16, 32, "outlier")
    p = LayerProblem(W, G, "per_row", 0.5)
    fast, info = relaxation_bound(p, shift="jacobi")
    slow, _ = relaxation_bound(p, iterations=3000, tol=0.0, dtype=torch.float64, shift="jacobi")
    assert float(fast.sum()) <= float(slow.sum()) * (1 + 1e-6)  # early stop: never above the converged run …
    assert float(fast.sum()) >= 0.99 * float(slow.sum())  # … and close to it
    assert info["mu"] > 0 and float(fast.sum()) > 0


def test_project_capped_is_the_projection() -> None:
    """Safeguarded Newton with warm starts returns clip(y − τ, 0, 1) with the right sum (vs bisection)."""
    from maskopt.certify.bounds import _project_capped

    g = torch.Generator().manual_seed(3)
    for total, size in ((2.0, 4), (37.0, 64), (1.0, 300), (299.0, 300)):
        Y = 3.0 * torch.randn(50, size, generator=g, dtype=torch.float64)
        Y[0] = 0.5  # all equal
        Z, tau = _project_capped(Y, total)
        assert torch.allclose(Z.sum(1), torch.full((50,), total, dtype=torch.float64), atol=1e-6 * total)
        lo, hi = Y.min(1, keepdim=True).values - 1, Y.max(1, keepdim=True).values
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            big = (Y - mid).clamp(0, 1).sum(1, keepdim=True) > total
            lo, hi = torch.where(big, mid, lo), torch.where(big, hi, mid)
        assert torch.allclose(Z, (Y - 0.5 * (lo + hi)).clamp(0, 1), atol=1e-6)
        Z2, _ = _project_capped(Y + 1e-3, total, tau=tau)  # warm start from the previous τ
        assert torch.allclose(Z2, (Y + 1e-3 - 0.5 * (lo + hi) - 1e-3).clamp(0, 1), atol=1e-6)
