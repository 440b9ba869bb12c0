"""Per-matrix masked least squares: the closed-form optimum, zeros off the mask, never worse."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from maskopt.solve.patterns import Pattern
from maskopt.solve.problem import LayerProblem
from maskopt.solve.lstsq import layer_lstsq, masked_lstsq, row_objective


def _data(seed, rows, d, tokens, density=0.5):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(d, tokens, generator=g, dtype=torch.float64)
    W = torch.randn(rows, d, generator=g, dtype=torch.float64)
    M = torch.rand(rows, d, generator=g) < density
    return X, W, M


@pytest.mark.parametrize("seed", range(3))
def test_matches_numpy_lstsq(seed):
    X, W, M = _data(seed, rows=6, d=10, tokens=40)
    Y = W @ X + 0.1 * torch.randn(6, 40, dtype=torch.float64)  # targets need not come from W
    new = masked_lstsq(X @ X.T, Y @ X.T, M)
    for i in range(6):
        S = M[i].numpy()
        ref, *_ = np.linalg.lstsq(X.numpy()[S].T, Y[i].numpy(), rcond=None)
        np.testing.assert_allclose(new[i].numpy()[S], ref, rtol=1e-8, atol=1e-10)
        assert (new[i][~M[i]] == 0).all()


def test_layer_lstsq_is_optimal_layer_error():
    X, W, M = _data(7, rows=5, d=12, tokens=60)
    G = X @ X.T
    new = layer_lstsq(W, G, M)
    prob = LayerProblem(W, G, Pattern.parse("unstructured"), 0.5)
    e_new, e_old = prob.error(M, new), prob.error(M)
    assert e_new < e_old
    # optimality: gradient of the layer error is zero on the kept entries
    grad = (new - W) @ G
    assert grad[M].abs().max() < 1e-8 * (1 + G.abs().max())


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), rows=st.integers(1, 6), d=st.integers(1, 12), tokens=st.integers(1, 20),
       density=st.floats(0.0, 1.0), damp=st.sampled_from([0.0, 1e-6, 1e-2, 10.0]))
def test_never_increases_row_objective(seed, rows, d, tokens, density, damp):
    """Also with rank-deficient G (tokens < d) and heavy damping: no row gets worse, zeros stay zero."""
    X, W, M = _data(seed, rows, d, tokens, density)
    Wm = W * M
    G, B = X @ X.T, W @ X @ X.T
    new = masked_lstsq(G, B, M, damp=damp, W0=Wm)
    assert torch.isfinite(new).all()
    assert (new[~M] == 0).all()
    assert (row_objective(new, G, B) <= row_objective(Wm, G, B) + 1e-9 * (1 + row_objective(Wm, G, B).abs())).all()


def test_two_four_mask_kept():
    X, W, _ = _data(3, rows=4, d=16, tokens=50)
    pat = Pattern.parse("2:4")
    M = pat.topk_mask(W.abs(), pat.keep_per_group(4, 16, 0.5))
    new = layer_lstsq(W, X @ X.T, M)
    assert ((new != 0) <= M).all()


def test_shape_mismatch_is_clear():
    with pytest.raises(ValueError, match="shapes"):
        masked_lstsq(torch.eye(3), torch.zeros(2, 4), torch.ones(2, 4, dtype=torch.bool))
