"""Baseline methods: exact counts, patterns, determinism, definitions, brute-force lower bound."""
import pytest
import torch

from maskopt.solve.methods import available, get_method
from maskopt.solve.problem import LayerProblem

from maskopt.testing import brute_force

BASELINES = ["magnitude", "wanda", "sparsegpt", "ria"]


def _problem(rows=8, d=16, pattern="per_row", sparsity=0.5, seed=0, n=64, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(d, n, generator=g, dtype=dtype) * torch.rand(d, 1, generator=g, dtype=dtype) * 3
    W = torch.randn(rows, d, generator=g, dtype=dtype)
    return LayerProblem(W, X @ X.T, pattern, sparsity)


def test_registry_lists_baselines_and_rejects_unknown():
    assert set(BASELINES) <= set(available())
    with pytest.raises(ValueError, match="unknown method"):
        get_method("nope")
    with pytest.raises(ValueError, match="no option"):
        get_method("wanda", foo=1)


@pytest.mark.parametrize("name", BASELINES)
@pytest.mark.parametrize("pattern,sparsity", [("per_row", 0.5), ("per_row", 0.7), ("unstructured", 0.6),
                                              ("2:4", 0.5), ("4:8", 0.5)])
def test_counts_and_determinism(name, pattern, sparsity):
    p = _problem(rows=6, d=32, pattern=pattern, sparsity=sparsity, dtype=torch.float32)
    a = get_method(name).solve(p)
    b = get_method(name).solve(p)
    assert p.is_feasible(a.mask)
    assert torch.equal(a.mask, b.mask)
    if pattern == "per_row":
        assert (a.mask.sum(1) == 32 - int(sparsity * 32)).all()
    if pattern == "unstructured":
        assert int(a.mask.sum()) == 6 * 32 - int(sparsity * 6 * 32)
    if pattern == "2:4":
        assert (a.mask.reshape(6, -1, 4).sum(-1) == 2).all()
    if a.weight is not None:
        assert (a.weight[~a.mask] == 0).all()


def test_magnitude_and_wanda_equal_their_definitions():
    p = _problem(rows=5, d=12)
    k = p.keep
    mag = get_method("magnitude").solve(p).mask
    wan = get_method("wanda").solve(p).mask
    norms = (p.G.diagonal()).sqrt()
    for i in range(p.rows):
        top_mag = set(torch.argsort(p.W[i].abs(), descending=True)[:k].tolist())
        top_wan = set(torch.argsort(p.W[i].abs() * norms, descending=True)[:k].tolist())
        assert set(torch.nonzero(mag[i]).flatten().tolist()) == top_mag
        assert set(torch.nonzero(wan[i]).flatten().tolist()) == top_wan


@pytest.mark.parametrize("pattern", ["per_row", "2:4"])
@pytest.mark.parametrize("seed", range(4))
def test_no_mask_beats_brute_force(pattern, seed):
    p = _problem(rows=4, d=12, pattern=pattern, seed=seed)
    opt, _ = brute_force(p.W, p.G, p.pattern, p.keep)
    for name in BASELINES:
        mask = get_method(name).solve(p).mask
        assert p.error(mask) >= opt - 1e-9 * max(1.0, opt)


@pytest.mark.parametrize("pattern", ["per_row", "unstructured", "2:4"])
@pytest.mark.parametrize("seed", range(3))
def test_sparsegpt_update_lowers_error(pattern, seed):
    p = _problem(rows=16, d=64, pattern=pattern, seed=seed, n=256)
    sol = get_method("sparsegpt").solve(p)
    assert p.error(sol.mask, sol.weight) < p.error(sol.mask)


def test_sparsegpt_singular_gram_does_not_crash():
    p = _problem(rows=4, d=16, n=3)  # rank 3 ≪ 16
    G = p.G.clone()
    G[5, :] = 0
    G[:, 5] = 0  # a dead input
    q = LayerProblem(p.W, G, "per_row", 0.5)
    sol = get_method("sparsegpt").solve(q)
    assert q.is_feasible(sol.mask) and torch.isfinite(sol.weight).all()
    z = LayerProblem(p.W, torch.zeros_like(G), "per_row", 0.5)
    assert z.is_feasible(get_method("sparsegpt").solve(z).mask)


def test_ria_definition():
    p = _problem(rows=5, d=12)
    A = p.W.abs()
    score = (A / A.sum(0) + A / A.sum(1, keepdim=True)) * p.G.diagonal().sqrt() ** 0.5
    assert torch.equal(get_method("ria").solve(p).mask, p.topk(score))
