"""LayerProblem and patterns: the error identity, counts, validation."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from maskopt.solve.patterns import Pattern, PatternError
from maskopt.solve.problem import LayerProblem


def _instance(rows=6, d=16, n=40, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(d, n, generator=g, dtype=dtype)
    W = torch.randn(rows, d, generator=g, dtype=dtype)
    return W, X


@pytest.mark.parametrize("pattern", ["per_row", "unstructured", "2:4", "4:8"])
def test_error_via_gram_equals_error_via_inputs(pattern):
    W, X = _instance()
    p = LayerProblem(W, X @ X.T, pattern, 0.5)
    mask = p.topk(torch.rand(W.shape, generator=torch.Generator().manual_seed(1), dtype=W.dtype))
    direct = float(((W @ X - (W * mask) @ X) ** 2).sum())
    assert p.error(mask) == pytest.approx(direct, rel=1e-10)
    assert p.dense_energy() == pytest.approx(float(((W @ X) ** 2).sum()), rel=1e-10)
    W2 = W + 0.1
    direct2 = float(((W @ X - (W2 * mask) @ X) ** 2).sum())
    assert p.error(mask, W2) == pytest.approx(direct2, rel=1e-10)


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 5), groups=st.integers(1, 4), sparsity=st.floats(0, 0.99),
       kind=st.sampled_from(["per_row", "unstructured", "2:4", "1:4", "4:8"]), seed=st.integers(0, 10**6))
def test_topk_mask_counts_exact(rows, groups, sparsity, kind, seed):
    pat = Pattern.parse(kind)
    d = groups * 8
    scores = torch.randn(rows, d, generator=torch.Generator().manual_seed(seed))
    keep = pat.keep_per_group(rows, d, sparsity)
    mask = pat.topk_mask(scores, keep)
    assert pat.counts_ok(mask, keep)
    # the kept entries are the highest in their group
    g_scores, g_mask = pat.to_groups(scores), pat.to_groups(mask)
    for s, m in zip(g_scores, g_mask):
        if m.any() and (~m).any():
            assert s[m].min() >= s[~m].max()


def test_ties_are_deterministic():
    scores = torch.ones(3, 8)
    a = Pattern.parse("per_row").topk_mask(scores, 3)
    b = Pattern.parse("per_row").topk_mask(scores.clone(), 3)
    assert torch.equal(a, b) and a[:, :3].all() and not a[:, 3:].any()


@pytest.mark.parametrize("bad", ["3:2", "0:4", "4:4", "banana", "2:"])
def test_invalid_pattern(bad):
    with pytest.raises(PatternError):
        Pattern.parse(bad)


@pytest.mark.parametrize("s", [-0.1, 1.0, 1.5, float("nan")])
def test_invalid_sparsity(s):
    W, X = _instance()
    with pytest.raises(ValueError, match="sparsity"):
        LayerProblem(W, X @ X.T, "per_row", s)


def test_nm_needs_divisible_width():
    W, X = _instance(d=10)
    with pytest.raises(PatternError, match="divisible"):
        LayerProblem(W, X @ X.T, "2:4", 0.5)


def test_nonfinite_inputs_name_the_layer():
    W, X = _instance()
    W[0, 0] = float("nan")
    with pytest.raises(ValueError, match="blk.q"):
        LayerProblem(W, X @ X.T, "per_row", 0.5, name="blk.q")
    W, X = _instance()
    G = X @ X.T
    G[1, 1] = float("inf")
    with pytest.raises(ValueError, match="activations"):
        LayerProblem(W, G, "per_row", 0.5, name="blk.q")
