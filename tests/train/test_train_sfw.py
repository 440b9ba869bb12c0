"""SFW on small convex problems with known solutions; feasibility of every iterate; the lr rescalings."""
from __future__ import annotations

import pytest
import torch

from maskopt.train import SFW, KSupportBall, L1Ball, L2Ball, sfw_param_groups


def _solve(C, b: torch.Tensor, steps: int, x0=None, **kw) -> tuple[torch.Tensor, list[float]]:
    """min ½‖x − b‖² over C with SFW; returns the final x and the region norm of every iterate."""
    x = torch.nn.Parameter(x0.clone() if x0 is not None else torch.zeros_like(b))
    opt = SFW([{"params": [x], "constraint": C}], **kw)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 2.0 / (t + 2)) if kw.get("rescale") is None else None
    norms = []
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * ((x - b) ** 2).sum()).backward()
        opt.step()
        if sched:
            sched.step()
        norms.append(C.norm(x.detach()))
    return x.detach(), norms


B = torch.tensor([3.0, -1.0, 0.5, 0.2], dtype=torch.float64)


def test_fw_on_l2_ball_reaches_the_projection():
    x, norms = _solve(L2Ball(2.0), B, 300, lr=1.0, momentum=0.0, rescale=None)
    assert torch.allclose(x, 2.0 * B / B.norm(), atol=1e-2)
    assert max(norms) <= 2.0 + 1e-9


@pytest.mark.parametrize("C", [L1Ball(2.0), KSupportBall(2.0, k=1)], ids=["l1", "ksupport-k1"])
def test_fw_on_l1_like_balls_reaches_the_soft_threshold(C):
    # projection of b onto {‖x‖₁ ≤ 2}: soft threshold at λ = 1 → (2, 0, 0, 0)
    x, norms = _solve(C, B, 3000, lr=1.0, momentum=0.0, rescale=None)
    assert torch.allclose(x, torch.tensor([2.0, 0, 0, 0], dtype=torch.float64), atol=5e-3)
    assert max(norms) <= 2.0 + 1e-9


def test_ksupport_ball_problem_with_sparse_optimum():
    # b lies outside the 2-support ball of radius 1 and is 2-sparse: the solution is b/‖b‖
    b = torch.tensor([0.0, 3.0, 0.0, -4.0, 0.0], dtype=torch.float64)
    x, norms = _solve(KSupportBall(1.0, k=2), b, 300, lr=1.0, momentum=0.0, rescale=None)
    assert torch.allclose(x, b / 5.0, atol=1e-2)
    assert max(norms) <= 1.0 + 1e-9


def test_gradient_rescaled_sfw_with_momentum_converges_and_stays_feasible():
    x, norms = _solve(L2Ball(2.0), B, 400, x0=torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=torch.float64),
                      lr=0.3, momentum=0.5, rescale="gradient")
    assert torch.allclose(x, 2.0 * B / B.norm(), atol=2e-2)
    assert max(norms) <= 2.0 + 1e-9


def test_step_sizes_of_the_rescalings():
    b = torch.tensor([1.0, 0.0], dtype=torch.float64)
    for rescale, expected in [("gradient", 0.1 * 1.0 / 2.0), ("diameter", 0.1 / 4.0), (None, 0.1)]:
        x = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
        opt = SFW([{"params": [x], "constraint": L2Ball(2.0)}], lr=0.1, momentum=0.0, rescale=rescale)
        (0.5 * ((x - b) ** 2).sum()).backward()  # grad = (−1, 0), v = (2, 0), ‖x − v‖ = 2
        opt.step()
        assert opt.param_groups[0]["effective_lr"] == pytest.approx(expected)
        assert torch.allclose(x.detach(), torch.tensor([2.0 * expected, 0.0], dtype=torch.float64))


def test_param_groups_radius_from_init_and_initial_shift():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(20, 10), torch.nn.Linear(10, 3))
    groups = sfw_param_groups(model.named_parameters(), "ksupport", k=0.2, width=0.1)
    kinds = {g["name"]: g["constraint"].kind for g in groups}
    assert kinds == {"0.weight": "ksupport", "0.bias": "l2", "1.weight": "ksupport", "1.bias": "l2"}
    w0 = model[0].weight.detach().clone()
    opt = SFW(groups, lr=0.1)  # width 0.1: the initial weights lie outside and are shifted onto the boundary
    C = groups[0]["constraint"]
    assert C.norm(model[0].weight.detach()) == pytest.approx(C.radius, rel=1e-5)
    assert torch.allclose(model[0].weight.detach() / w0, (model[0].weight.detach() / w0).flatten()[0])
    with pytest.raises(ValueError, match="constraint"):
        SFW([{"params": [model[0].weight]}])
    with pytest.raises(ValueError, match="momentum"):
        SFW(groups, momentum=1.0)
    assert opt.regions()[0] is C
