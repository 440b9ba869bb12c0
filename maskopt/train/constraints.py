"""Feasible regions of Stochastic Frank-Wolfe and their linear minimization oracles (LMOs).

Each region C (one per parameter tensor, of radius τ) offers
    lmo(g)        = argmin_{v ∈ C} ⟨g, v⟩          (a vertex / extreme point, same shape as g)
    norm(x)       = the gauge of C at radius 1, so C = {x : norm(x) ≤ τ}
    dual_norm(g)  = max_{‖v‖ ≤ 1} ⟨g, v⟩, so min_{v∈C} ⟨g, v⟩ = −τ · dual_norm(g)
    l2_diameter   = max_{u, v ∈ C} ‖u − v‖₂

    L2Ball          {‖x‖₂ ≤ τ}                                   v = −τ g / ‖g‖₂             D = 2τ
    L1Ball          {‖x‖₁ ≤ τ}                                   v = −τ sign(g_i) e_i, i = argmax |g_i|   D = 2τ
    KSparsePolytope conv{‖x‖₀ ≤ k, ‖x‖_∞ ≤ τ}                     v = −τ sign(g) on the top-k |g|   D = 2τ√k
    KSupportBall    conv{‖x‖₀ ≤ k, ‖x‖₂ ≤ τ}                      v = −τ g_S / ‖g_S‖₂, S = top-k |g|  D = 2τ

Radius from the initial weights, as the SFW papers do (Pokutta, Spiegel, Zimmer 2020; Zimmer,
Spiegel, Pokutta 2025): the ℓ₂ diameter is set to D = 2 · width · ‖θ₀‖₂ and τ is the radius of
that diameter (τ = D/2, or D/(2√k) for the k-sparse polytope). ``k`` is a count, or a fraction
of the tensor's entries when k ≤ 1 (at least 1).
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch

from .norms import ksparse_dual_norm, ksparse_norm, ksupport_dual_norm, ksupport_norm

KINDS = ("ksupport", "ksparse", "l1", "l2")


class Constraint(ABC):
    """A centrally symmetric convex set {x : norm(x) ≤ radius} for one parameter tensor."""

    kind: str = ""

    def __init__(self, radius: float):
        if not (math.isfinite(radius) and radius > 0):
            raise ValueError(f"radius must be a finite number > 0, got {radius!r}")
        self.radius = float(radius)

    @abstractmethod
    def lmo(self, g: torch.Tensor) -> torch.Tensor:
        """argmin_{v ∈ C} ⟨g, v⟩ (same shape and dtype as g)."""

    def __call__(self, g: torch.Tensor, lb: torch.Tensor | None = None, ub: torch.Tensor | None = None) -> torch.Tensor:
        """The LMO protocol of maskopt.solve.fw.lmo; these regions take no variable bounds."""
        if lb is not None or ub is not None:
            raise ValueError(f"the {self.kind} region of SFW takes no variable bounds")
        return self.lmo(g)

    @abstractmethod
    def norm(self, x: torch.Tensor) -> float:
        """Gauge of the radius-1 set."""

    @abstractmethod
    def dual_norm(self, g: torch.Tensor) -> float:
        """Support function of the radius-1 set."""

    @property
    @abstractmethod
    def l2_diameter(self) -> float:
        ...

    def contains(self, x: torch.Tensor, rtol: float = 1e-6) -> bool:
        return self.norm(x) <= self.radius * (1 + rtol)

    @torch.no_grad()
    def shift_inside(self, x: torch.Tensor) -> torch.Tensor:
        """x scaled by τ / norm(x) when it lies outside (a feasible point on the ray of x), else x."""
        n = self.norm(x)
        return x * (self.radius / n) if n > self.radius else x

    def describe(self) -> dict:
        return {"kind": self.kind, "radius": self.radius, "l2_diameter": self.l2_diameter}


class L2Ball(Constraint):
    kind = "l2"

    def lmo(self, g: torch.Tensor) -> torch.Tensor:
        n = float(g.norm())
        return torch.zeros_like(g) if n == 0 else g * (-self.radius / n)

    def norm(self, x: torch.Tensor) -> float:
        return float(x.detach().to(torch.float64).norm())

    def dual_norm(self, g: torch.Tensor) -> float:
        return float(g.detach().to(torch.float64).norm())

    @property
    def l2_diameter(self) -> float:
        return 2 * self.radius


class L1Ball(Constraint):
    kind = "l1"

    def lmo(self, g: torch.Tensor) -> torch.Tensor:
        flat = g.reshape(-1)
        v = torch.zeros_like(flat)
        i = int(flat.abs().argmax())
        if flat[i] != 0:
            v[i] = -self.radius * torch.sign(flat[i])
        return v.view_as(g)

    def norm(self, x: torch.Tensor) -> float:
        return float(x.detach().to(torch.float64).abs().sum())

    def dual_norm(self, g: torch.Tensor) -> float:
        return float(g.detach().to(torch.float64).abs().max()) if g.numel() else 0.0

    @property
    def l2_diameter(self) -> float:
        return 2 * self.radius


class _KConstraint(Constraint):
    def __init__(self, radius: float, k: int):
        super().__init__(radius)
        if int(k) < 1:
            raise ValueError(f"k must be ≥ 1, got {k}")
        self.k = int(k)

    def _support(self, g: torch.Tensor) -> torch.Tensor:
        flat = g.reshape(-1)
        return torch.topk(flat.abs(), min(self.k, flat.numel()), sorted=False).indices

    def describe(self) -> dict:
        return super().describe() | {"k": self.k}


class KSparsePolytope(_KConstraint):
    """Miao et al.'s / Pokutta et al.'s k-sparse polytope: vertices have k entries ±τ, the rest 0."""

    kind = "ksparse"

    def lmo(self, g: torch.Tensor) -> torch.Tensor:
        flat = g.reshape(-1)
        idx = self._support(g)
        v = torch.zeros_like(flat)
        v[idx] = -self.radius * torch.sign(flat[idx])
        return v.view_as(g)

    def norm(self, x: torch.Tensor) -> float:
        return ksparse_norm(x, self.k)

    def dual_norm(self, g: torch.Tensor) -> float:
        return ksparse_dual_norm(g, self.k)

    @property
    def l2_diameter(self) -> float:
        return 2 * self.radius * math.sqrt(self.k)


class KSupportBall(_KConstraint):
    """The k-support-norm ball: k-sparse extreme points on the ℓ₂ sphere of radius τ."""

    kind = "ksupport"

    def lmo(self, g: torch.Tensor) -> torch.Tensor:
        flat = g.reshape(-1)
        idx = self._support(g)
        v = torch.zeros_like(flat)
        gs = flat[idx]
        n = float(gs.norm())
        if n > 0:
            v[idx] = gs * (-self.radius / n)
        return v.view_as(g)

    def norm(self, x: torch.Tensor) -> float:
        return ksupport_norm(x, self.k)

    def dual_norm(self, g: torch.Tensor) -> float:
        return ksupport_dual_norm(g, self.k)

    @property
    def l2_diameter(self) -> float:
        return 2 * self.radius


def resolve_k(k: float, numel: int) -> int:
    """k > 1: a count (capped at numel); 0 < k ≤ 1: a fraction of numel; always at least 1."""
    if not (math.isfinite(k) and k > 0):
        raise ValueError(f"k must be > 0 (a count, or a fraction ≤ 1), got {k!r}")
    return max(1, min(numel, int(k) if k > 1 else int(k * numel)))


def make_constraint(kind: str, radius: float, k: float = 1, numel: int = 1) -> Constraint:
    """A region of the given kind and radius τ (k resolved against ``numel`` for the k-sets)."""
    if kind == "l2":
        return L2Ball(radius)
    if kind == "l1":
        return L1Ball(radius)
    if kind == "ksparse":
        return KSparsePolytope(radius, resolve_k(k, numel))
    if kind == "ksupport":
        return KSupportBall(radius, resolve_k(k, numel))
    raise ValueError(f"unknown constraint {kind!r}; choose one of {', '.join(KINDS)}")


def constraint_from_init(kind: str, x0: torch.Tensor, width: float = 1.0, k: float = 1) -> Constraint:
    """Region whose ℓ₂ diameter is 2 · width · ‖x₀‖₂ (‖x₀‖₂ = 0, e.g. zero-initialized biases: 1.0)."""
    if not (math.isfinite(width) and width > 0):
        raise ValueError(f"width must be a finite number > 0, got {width!r}")
    n0 = float(x0.detach().to(torch.float64).norm()) or 1.0
    diameter = 2.0 * width * n0
    if kind == "ksparse":
        kk = resolve_k(k, x0.numel())
        return KSparsePolytope(diameter / (2 * math.sqrt(kk)), kk)
    return make_constraint(kind, diameter / 2, k, x0.numel())
