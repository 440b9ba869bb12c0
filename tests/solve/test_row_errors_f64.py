"""The report's layer errors in blocks (row_errors_f64) equal ‖(W − Ŵ ⊙ m) X‖² per row computed from X itself."""
from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from maskopt.solve.layer_math import row_errors_f64
from maskopt.solve.problem import LayerProblem


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 9), d=st.integers(1, 13), n=st.integers(1, 20), block=st.integers(1, 6),
       refit=st.booleans(), dense=st.booleans(), relaxed=st.booleans(), seed=st.integers(0, 10_000))
def test_blocked_errors_equal_the_definition(rows, d, n, block, refit, dense, relaxed, seed):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(rows, d, generator=g)
    X = torch.randn(d, n, generator=g, dtype=torch.float64)
    G = (X @ X.T).to(torch.float32)
    m = torch.rand(rows, d, generator=g) if relaxed else torch.rand(rows, d, generator=g) < 0.5
    weight = W + torch.randn(rows, d, generator=g) if refit else None
    got = row_errors_f64(W, G, None if dense else m, weight, block=block)
    W64 = W.double()
    R = W64 if dense else W64 - (weight.double() if refit else W64) * m.double()
    truth = ((R @ G.double()) * R).sum(1)  # G as the problem holds it; ‖R X‖² up to G's float32 rounding
    torch.testing.assert_close(got, truth, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(got, ((R @ X) ** 2).sum(1), rtol=1e-5, atol=1e-4)


def test_blocked_errors_never_change_their_inputs():
    g = torch.Generator().manual_seed(1)
    for dtype in (torch.float32, torch.float64):
        W, G = torch.randn(7, 5, generator=g, dtype=dtype), torch.eye(5, dtype=dtype)
        m = torch.rand(7, 5, generator=g) < 0.5
        W0, G0 = W.clone(), G.clone()
        row_errors_f64(W, G, m, block=2)
        row_errors_f64(W, G, m, W * 2, block=2)
        assert torch.equal(W, W0) and torch.equal(G, G0)


def test_problem_reports_blocked_errors():
    g = torch.Generator().manual_seed(0)
    W, X = torch.randn(2500, 40, generator=g), torch.randn(40, 64, generator=g)
    p = LayerProblem(W, X @ X.T, "per_row", 0.5)
    m = torch.rand(2500, 40, generator=g) < 0.5
    R = (W * ~m).double()
    torch.testing.assert_close(p.row_errors(m), ((R @ (X @ X.T).double()) * R).sum(1), rtol=1e-12, atol=1e-9)
    assert abs(p.dense_energy() - float(((W.double() @ (X @ X.T).double()) * W.double()).sum())) < 1e-9 * p.dense_energy()
