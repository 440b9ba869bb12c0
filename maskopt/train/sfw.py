"""Stochastic Frank-Wolfe (SFW) as a ``torch.optim.Optimizer``.

For every parameter θ with feasible region C (see :mod:`maskopt.train.constraints`), one step is

    d_t = μ d_{t−1} + (1 − μ) ∇f(θ_t)          (d_0 = ∇f(θ_0); μ = ``momentum``, 0 = plain SFW)
    v_t = argmin_{v ∈ C} ⟨d_t, v⟩               (the LMO)
    θ_{t+1} = θ_t + η_t (v_t − θ_t),   η_t = clamp(lr · s_t, 0, 1)

with the learning-rate rescaling s_t
    'gradient': s_t = ‖d_t‖₂ / ‖θ_t − v_t‖₂   (Pokutta et al. 2020; the compression-aware SFW paper
                                                shows robustness to pruning hinges on it)
    'diameter': s_t = 1 / D                    (D = ℓ₂ diameter of C)
    None:       s_t = 1.
Since θ_{t+1} is a convex combination of θ_t ∈ C and v_t ∈ C, every iterate stays feasible; the
constructor first moves θ₀ into C if needed (``shift_inside``, a rescaling along its ray).
The rescaling is per parameter tensor (per layer), as the papers do with per-layer regions.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable

import torch
from torch import nn

from .constraints import Constraint, constraint_from_init

RESCALES = ("gradient", "diameter", None)


class SFW(torch.optim.Optimizer):
    """Stochastic Frank-Wolfe over one region per parameter.

    ``params``: parameter groups, each a dict with exactly one tensor in 'params' and its
    'constraint' (a :class:`Constraint`), e.g. from :func:`sfw_param_groups`.
    """

    def __init__(self, params: Iterable[dict], lr: float = 0.1, momentum: float = 0.9,
                 rescale: str | None = "gradient", make_feasible: bool = True):
        if rescale == "none":
            rescale = None
        if rescale not in RESCALES:
            raise ValueError(f"rescale must be 'gradient', 'diameter' or None, got {rescale!r}")
        if not (math.isfinite(lr) and lr >= 0):
            raise ValueError(f"lr must be a finite number ≥ 0, got {lr!r}")
        if rescale is None and lr > 1:
            raise ValueError(f"without rescaling the SFW step size lr must lie in [0, 1], got {lr}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must lie in [0, 1), got {momentum!r}")
        groups = list(params)
        for g in groups:
            if not isinstance(g, dict) or not isinstance(g.get("constraint"), Constraint):
                raise ValueError("every SFW parameter group needs a 'constraint' (see sfw_param_groups)")
            ps = g["params"] if isinstance(g["params"], (list, tuple)) else [g["params"]]
            if len(ps) != 1:
                raise ValueError(f"an SFW parameter group holds exactly one tensor, got {len(ps)}")
        super().__init__(groups, dict(lr=lr, momentum=momentum))
        self.rescale = rescale
        if make_feasible:
            with torch.no_grad():
                for g in self.param_groups:
                    p = g["params"][0]
                    p.copy_(g["constraint"].shift_inside(p))

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            p = group["params"][0]
            if p.grad is None:
                continue
            d = p.grad
            mu = group["momentum"]
            if mu > 0:
                state = self.state[p]
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = d.detach().clone()
                else:
                    buf.mul_(mu).add_(d, alpha=1 - mu)
                d = buf
            C: Constraint = group["constraint"]
            v = C(d)
            if self.rescale == "gradient":
                gap = float((p - v).norm())
                factor = float(d.norm()) / gap if gap > 0 else 0.0
            elif self.rescale == "diameter":
                factor = 1.0 / C.l2_diameter
            else:
                factor = 1.0
            eta = min(max(group["lr"] * factor, 0.0), 1.0)
            group["effective_lr"] = eta
            if eta > 0:
                p.mul_(1 - eta).add_(v, alpha=eta)
        return loss

    @torch.no_grad()
    def reset_momentum(self) -> None:
        for group in self.param_groups:
            self.state[group["params"][0]].pop("momentum_buffer", None)

    def regions(self) -> list[Constraint]:
        return [g["constraint"] for g in self.param_groups]


def sfw_param_groups(named_params: Iterable[tuple[str, nn.Parameter]], kind: str = "ksupport", k: float = 0.3,
                     width: float = 10.0, sparse_names: Iterable[str] | None = None,
                     other_kind: str = "l2") -> list[dict]:
    """One SFW group per trainable tensor; radius from its current (initial) weights.

    Tensors named in ``sparse_names`` (default: every tensor with ≥ 2 dimensions, i.e. weight
    matrices) get the region ``kind`` with sparsity parameter ``k``; the rest (biases, norms)
    get ``other_kind`` (k-sets would sparsify them too). The same ``width`` scales all radii.
    """
    names = set(sparse_names) if sparse_names is not None else None
    groups = []
    for name, p in named_params:
        if not p.requires_grad:
            continue
        sparse = (name in names) if names is not None else p.dim() >= 2
        C = constraint_from_init(kind if sparse else other_kind, p, width=width, k=k)
        groups.append({"params": [p], "constraint": C, "name": name})
    if not groups:
        raise ValueError("no trainable parameters for SFW")
    return groups
