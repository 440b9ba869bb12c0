"""LMOs of the SFW regions against brute force over vertices / supports, and the norms against
independent bounds (the variational formula from above, weak duality from below)."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from maskopt.train import (KSparsePolytope, KSupportBall, L1Ball, L2Ball, constraint_from_init, ksparse_norm,
                           ksupport_dual_norm, ksupport_norm, make_constraint)

torch.set_default_dtype(torch.float32)


def _vecs(n: int, d: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = [torch.randn(d, generator=g, dtype=torch.float64) for _ in range(n)]
    out.append(torch.tensor([3.0, -3.0, 1.0, 0.0, -0.5, 2.0][:d], dtype=torch.float64))  # ties and a zero
    return out


@pytest.mark.parametrize("d,k", [(5, 1), (5, 2), (6, 3), (6, 6)])
def test_ksupport_lmo_is_best_over_all_supports(d, k):
    C = KSupportBall(radius=1.7, k=k)
    for g in _vecs(20, d, seed=d * 10 + k):
        v = C.lmo(g)
        # brute force: over every support S with |S| = k, min_{‖x_S‖ ≤ τ} ⟨g, x⟩ = −τ ‖g_S‖
        best = min(-1.7 * float(g[list(S)].norm()) for S in itertools.combinations(range(d), k))
        assert float(g @ v) == pytest.approx(best, abs=1e-10)
        assert int((v != 0).sum()) <= k and float(v.norm()) == pytest.approx(1.7)
        assert float(g @ v) == pytest.approx(-1.7 * C.dual_norm(g), abs=1e-10)


@pytest.mark.parametrize("d,k", [(5, 1), (5, 2), (6, 4)])
def test_ksparse_lmo_is_best_vertex(d, k):
    C = KSparsePolytope(radius=0.8, k=k)
    for g in _vecs(20, d, seed=d + k):
        v = C.lmo(g)
        verts = (torch.zeros(d, dtype=torch.float64).index_put_((torch.tensor(S),), 0.8 * torch.tensor(sg,
                 dtype=torch.float64)) for S in itertools.combinations(range(d), k)
                 for sg in itertools.product((-1.0, 1.0), repeat=k))
        best = min(float(g @ u) for u in verts)
        assert float(g @ v) == pytest.approx(best, abs=1e-10)
        assert C.contains(v)
        assert float(g @ v) == pytest.approx(-0.8 * C.dual_norm(g), abs=1e-10)


def test_l1_lmo_is_best_vertex_and_l2_lmo_closed_form():
    for g in _vecs(20, 6, seed=3):
        v = L1Ball(2.0).lmo(g)
        best = min(s * 2.0 * float(g[i]) for i in range(6) for s in (-1, 1))
        assert float(g @ v) == pytest.approx(best) and int((v != 0).sum()) == 1
        w = L2Ball(2.0).lmo(g)
        assert torch.allclose(w, -2.0 * g / g.norm())
        # no point of the sphere does better (Cauchy–Schwarz), checked on random directions
        u = torch.randn(2000, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        u = 2.0 * u / u.norm(dim=1, keepdim=True)
        assert float((u @ g).min()) >= float(g @ w) - 1e-12
    assert torch.equal(L2Ball(1.0).lmo(torch.zeros(4)), torch.zeros(4))
    assert torch.equal(KSupportBall(1.0, 2).lmo(torch.zeros(4)), torch.zeros(4))


def _waterfilling_norm(x: torch.Tensor, k: int) -> float:
    """‖x‖_(k) from its variational formula min {Σ z_i²/θ_i : 0 < θ ≤ 1, Σθ ≤ k}, solved through its KKT
    conditions θ_i = min(1, z_i/μ) with Σθ = k, μ by bisection (independent of the sorted closed form)."""
    z = x.abs().double()
    if int((z > 0).sum()) <= k:
        return float(z.norm())
    lo, hi = 1e-12, float(z.sum()) * 2 + 1
    for _ in range(200):
        mu = (lo + hi) / 2
        lo, hi = (mu, hi) if float(torch.clamp(z / mu, max=1).sum()) > k else (lo, mu)
    th = torch.clamp(z / hi, max=1)
    return math.sqrt(float((z[z > 0] ** 2 / th[z > 0]).sum()))


@pytest.mark.parametrize("k", [1, 2, 3, 5, 7])
def test_ksupport_norm_matches_variational_formula_and_weak_duality(k):
    for x in _vecs(25, 8, seed=k) + [torch.tensor([1.0, 1.0, 1.0, 1.0, 0.1, 0, 0, 0], dtype=torch.float64)]:
        n = ksupport_norm(x, k)
        assert n == pytest.approx(_waterfilling_norm(x, k), rel=1e-9)
        # weak duality ⟨g, x⟩ ≤ ‖x‖_(k) ‖g‖*_(k) for random g
        gs = torch.randn(500, x.numel(), dtype=torch.float64, generator=torch.Generator().manual_seed(k))
        assert max(float(g @ x) / ksupport_dual_norm(g, k) for g in gs) <= n + 1e-9


def test_ksupport_norm_special_cases_and_ball_membership():
    x = torch.tensor([3.0, -1.0, 0.5, 0.0, 2.0], dtype=torch.float64)
    assert ksupport_norm(x, 1) == pytest.approx(float(x.abs().sum()))
    assert ksupport_norm(x, 5) == pytest.approx(float(x.norm()))
    assert ksupport_norm(x, 9) == pytest.approx(float(x.norm()))
    # the norm is the gauge: x/‖x‖ is on the boundary, so a convex combination of LMO vertices reaches it
    C = KSupportBall(1.0, 2)
    y = C.shift_inside(x)
    assert C.norm(y) == pytest.approx(1.0)
    # a 2-sparse unit vector has k-support norm 1; the average of two has norm ≤ 1
    a, b = torch.tensor([1.0, 0, 0, 0]), torch.tensor([0, 0.6, 0.8, 0])
    assert ksupport_norm(a, 2) == pytest.approx(1.0) and ksupport_norm((a + b) / 2, 2) <= 1.0 + 1e-12
    assert ksparse_norm(torch.tensor([1.0, 1.0, 0.5]), 2) == pytest.approx(1.25)


def test_radius_from_initial_weights_sets_the_l2_diameter():
    x0 = torch.randn(40, 30, generator=torch.Generator().manual_seed(0))
    n0 = float(x0.norm())
    for kind in ("l2", "l1", "ksupport", "ksparse"):
        C = constraint_from_init(kind, x0, width=3.0, k=0.1)
        assert C.l2_diameter == pytest.approx(2 * 3.0 * n0)
    assert constraint_from_init("ksparse", x0, k=0.1).k == 120
    assert constraint_from_init("ksupport", x0, k=5).k == 5
    with pytest.raises(ValueError, match="unknown constraint"):
        make_constraint("linf", 1.0)
    with pytest.raises(ValueError, match="radius"):
        L2Ball(0.0)
