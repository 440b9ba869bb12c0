"""Norms behind the SFW feasible regions, as pure functions on tensors (any shape, read flat).

k-support norm (Argyriou, Foygel, Srebro 2012): the gauge of
    C_k = conv{x : ‖x‖₀ ≤ k, ‖x‖₂ ≤ 1},
and its dual norm ‖g‖*_(k) = ‖top_k(|g|)‖₂ (the ℓ₂ norm of the k largest magnitudes).

With z = |x| sorted decreasingly (d entries) and the variational formula
    ‖x‖²_(k) = min { Σ_i z_i² / θ_i : 0 < θ_i ≤ 1, Σ_i θ_i ≤ k },
the optimal θ is 1 on a head of k−r−1 entries and proportional to z on the tail, for some
r ∈ {0, …, k−1}. Each r gives the candidate
    c_r = Σ_{i<k−r−1} z_i² + (Σ_{i≥k−r−1} z_i)² / (r+1)       (0-based indices),
which is an upper bound whenever its θ is feasible, i.e. z_{k−r−1} ≤ (Σ_{i≥k−r−1} z_i)/(r+1);
the norm is the smallest feasible candidate (r = 0 is always feasible).

k-sparse polytope (the k-sparse norm): gauge of conv{x : ‖x‖₀ ≤ k, ‖x‖_∞ ≤ 1}
= {‖x‖_∞ ≤ 1, ‖x‖₁ ≤ k}, i.e. max(‖x‖_∞, ‖x‖₁ / k); its dual is the sum of the k largest |g_i|.
"""
from __future__ import annotations

import torch


def _k(k: int, d: int) -> int:
    if k < 1:
        raise ValueError(f"k must be ≥ 1, got {k}")
    return min(int(k), d)


def topk_abs(x: torch.Tensor, k: int) -> torch.Tensor:
    """The k largest |x_i| (flat, float64, decreasing)."""
    z = x.detach().reshape(-1).abs().to(torch.float64)
    return torch.topk(z, _k(k, z.numel()), sorted=True).values


def ksupport_norm(x: torch.Tensor, k: int) -> float:
    """‖x‖_(k), the k-support norm (k=1: ℓ₁, k ≥ d: ℓ₂); computed in float64."""
    z = torch.sort(x.detach().reshape(-1).abs().to(torch.float64), descending=True).values
    d = z.numel()
    if d == 0:
        return 0.0
    k = _k(k, d)
    P = torch.cat([z.new_zeros(1), torch.cumsum(z, 0)])        # P[j] = Σ_{i<j} z_i
    Q = torch.cat([z.new_zeros(1), torch.cumsum(z * z, 0)])    # Q[j] = Σ_{i<j} z_i²
    r = torch.arange(k, dtype=torch.long)                       # r = 0 … k−1
    h = k - r - 1                                               # head length = first tail index
    tail = P[d] - P[h]
    cand = Q[h] + tail * tail / (r + 1).to(torch.float64)
    feasible = z[h] <= tail / (r + 1).to(torch.float64) * (1 + 1e-12) + 1e-300
    feasible[0] = True
    return float(cand[feasible].min().clamp_min(0).sqrt())


def ksupport_dual_norm(g: torch.Tensor, k: int) -> float:
    """‖g‖*_(k) = sqrt(Σ of the k largest g_i²)."""
    return float(topk_abs(g, k).norm())


def ksparse_norm(x: torch.Tensor, k: int) -> float:
    """max(‖x‖_∞, ‖x‖₁ / k): the gauge of the k-sparse polytope of radius 1."""
    z = x.detach().reshape(-1).abs().to(torch.float64)
    if z.numel() == 0:
        return 0.0
    k = _k(k, z.numel())
    return float(torch.maximum(z.max(), z.sum() / k))


def ksparse_dual_norm(g: torch.Tensor, k: int) -> float:
    """Σ of the k largest |g_i|."""
    return float(topk_abs(g, k).sum())
