"""ALPS (Meng, Behdin, Wang, Mazumder, NeurIPS 2024): mask and kept weights chosen together by ADMM.

Normalized coordinates: n_j = √(G_jj + λ) (λ = percdamp · mean diag G), Ĝ = (G + λI) / (n nᵀ), w̃ = w ⊙ n.
Per layer, min Σ_i (w̃_i − w̃0_i)ᵀ Ĝ (w̃_i − w̃0_i) over W̃ with the pattern's support, split into a free W̃
and a copy D on the pattern (constraint W̃ = D), with dual V and penalty ρ:

    W̃ ← (W̃0 Ĝ − V + ρ D) (Ĝ + ρI)⁻¹       (Ĝ = Q Λ Qᵀ once: (Ĝ + ρI)⁻¹ = Q (Λ + ρI)⁻¹ Qᵀ for every ρ)
    D ← P(W̃ + V/ρ)                         (P keeps the largest squares in every group of the pattern)
    V ← V + ρ (W̃ − D)

Every ``check_every`` iterations ρ follows how much the support of D changed since the last check
(``schedule``: ×1.3 above 10 % of the kept count, ×1.2 above 0.5 %, ×1.1 for any change once ρ has
grown; while ρ has never grown, ρ / 5, and a restart from the start point if the support moved a little);
ADMM stops when a check sees no change after ρ has grown, or after ``min_iter`` iterations when the
change is below 0.03 %. The support of P(W̃) is then fixed and its kept weights re-solved by PCG
(maskopt.solve.pcg) on the layer's own least squares (``final='exact'``, the problem --refit solves) or
on ADMM's damped one (``final='damped'``, as the authors' code). Layers with the same Gram (q/k/v,
gate/up) share one normalization and eigendecomposition (cached by content, two entries).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import torch

from ..layer_math import work_dtype
from ..patterns import Pattern
from ..pcg import masked_pcg
from ..problem import LayerProblem, Solution
from ..progress import say
from .registry import register

RHO_MAX = 1e6


@dataclass
class NormalizedGram:
    """n (d,), Ĝ = (G + λI)/(n nᵀ) (d × d), its eigenvalues Λ and eigenvectors Q (Ĝ = Q Λ Qᵀ), and λ."""

    n: torch.Tensor
    Ghat: torch.Tensor
    evals: torch.Tensor
    Q: torch.Tensor
    damp: float


def normalized_gram(G: torch.Tensor, percdamp: float, dtype: torch.dtype) -> NormalizedGram:
    """Ĝ = (G + λI)/(n nᵀ) with n = √diag(G + λI), λ = percdamp · mean diag G (formed in float64); eigh in ``dtype``."""
    G64 = G.to(torch.float64)
    mean_diag = float(G64.diagonal().mean()) if G64.numel() else 0.0
    damp = percdamp * (mean_diag if mean_diag > 0 else 1.0)
    H = G64 + damp * torch.eye(G64.shape[0], dtype=torch.float64, device=G64.device)
    n = H.diagonal().clamp_min(torch.finfo(torch.float64).tiny).sqrt()
    Ghat = H / n[:, None] / n[None, :]
    Ghat = ((Ghat + Ghat.T) / 2).to(dtype)
    evals, Q = torch.linalg.eigh(Ghat)
    return NormalizedGram(n.to(dtype), Ghat, evals.clamp_min(0), Q, damp)


def ridge_inverse(ng: NormalizedGram, rho: float) -> torch.Tensor:
    """(Ĝ + ρI)⁻¹ = Q diag(1/(Λ + ρ)) Qᵀ."""
    return (ng.Q * (1.0 / (ng.evals + rho))[None, :]) @ ng.Q.T


def project_support(Z: torch.Tensor, pattern: Pattern, keep: int) -> torch.Tensor:
    """Support of the projection of Z onto the pattern: the ``keep`` largest Z² in every group (exact counts).

    Uses torch.topk (no stable sort: ties are broken by topk, deterministic on one device); cs256 uses the
    pattern's own chunk greedy, which is the exact projection there as well.
    """
    rows, d = Z.shape
    S = Z * Z
    if pattern.kind == "cs256":
        return pattern.topk_mask(S, keep)
    g = pattern.to_groups(S)
    mask = torch.zeros(g.shape, dtype=torch.bool, device=Z.device)
    if keep >= g.shape[1]:
        mask.fill_(True)
    elif keep > 0:
        mask.scatter_(1, torch.topk(g, keep, dim=1, sorted=False).indices, True)
    return pattern.from_groups(mask, rows, d)


@dataclass
class ADMMResult:
    W: torch.Tensor  # (rows, d) the last W̃ (dense, normalized coordinates)
    iterations: int
    rho: float
    restarts: int
    last_change: float  # support change at the last check, over the kept count


def schedule(rho: float, change: float, flips: int, grown: bool) -> tuple[float, bool, str]:
    """ρ after a check: (new ρ, ρ has grown, action) with action 'go', 'stop' or 'restart'.

    change: flips of the support since the last check over the kept count."""
    if change > 0.1:
        return rho * 1.3, True, "go"
    if change > 0.005:
        return rho * 1.2, True, "go"
    if flips > 0:
        return (rho * 1.1, True, "go") if grown else (rho / 5, False, "restart")
    return (rho, True, "stop") if grown else (rho / 5, False, "go")


def admm(ng: NormalizedGram, W0: torch.Tensor, pattern: Pattern, keep: int, *, rho: float, max_iter: int,
         check_every: int, min_iter: int, stop_change: float) -> ADMMResult:
    """ADMM of the module docstring from W̃ = W̃0, D = P(W̃0), V = 0 (W0 in normalized coordinates)."""
    C = W0 @ ng.Ghat
    supp = project_support(W0, pattern, keep)
    D0 = W0 * supp
    D, V, W = D0.clone(), torch.zeros_like(W0), W0.clone()
    kept = max(int(supp.sum()), 1)
    inv = ridge_inverse(ng, rho)
    grown, restarts, change, it = False, 0, 1.0, 0
    while it < max_iter:
        it += 1
        W = (C - V + rho * D) @ inv
        Z = W + V / rho
        m = project_support(Z, pattern, keep)
        D = Z * m
        V = V + rho * (W - D)
        if it % check_every:
            continue
        flips = int((m ^ supp).sum())
        supp = m
        change = flips / kept
        if it >= min_iter and change < stop_change:
            break
        new_rho, grown, action = schedule(rho, change, flips, grown)
        say(lambda: f"ADMM iteration {it}, ρ {rho:.3g}, support change {100 * change:.2f}%")
        if action == "stop":
            break
        if action == "restart":
            restarts += 1
            D, V, W = D0.clone(), torch.zeros_like(W0), W0.clone()
        new_rho = min(new_rho, RHO_MAX)
        if new_rho != rho:
            rho = new_rho
            inv = ridge_inverse(ng, rho)
    return ADMMResult(W, it, rho, restarts, change)


class _GramCache:
    """The last few normalized Grams by exact content (q/k/v and gate/up hand the same G)."""

    def __init__(self, size: int = 2) -> None:
        self.size = size
        self.entries: list[tuple[torch.Tensor, float, NormalizedGram]] = []

    def get(self, G: torch.Tensor, percdamp: float, dtype: torch.dtype) -> tuple[NormalizedGram, bool]:
        for key, pd, ng in self.entries:
            if (pd == percdamp and key.shape == G.shape and key.dtype == G.dtype and key.device == G.device
                    and ng.Ghat.dtype == dtype and torch.equal(key, G)):
                return ng, True
        ng = normalized_gram(G, percdamp, dtype)
        self.entries = [(G.clone(), percdamp, ng), *self.entries][: self.size]
        return ng, False


@register("alps")
@dataclass
class ALPS:
    rho: float = 0.1  # initial ADMM penalty ρ (normalized coordinates: diag Ĝ = 1)
    max_iter: int = 300  # most ADMM iterations per layer
    check_every: int = 3  # iterations between two support checks (ρ updates)
    min_iter: int = 30  # a check after this many iterations stops when the support change is < stop_change
    stop_change: float = 3e-4  # support change (flips over the kept count) that ends ADMM after min_iter
    percdamp: float = 0.01  # λ = percdamp · mean diag G, in the normalization and in ADMM's objective
    final: Literal["exact", "damped"] = "exact"  # the kept weights' final solve: the layer's own least squares, or ADMM's damped one
    cg_iters: int = 10  # most PCG iterations of the final solve (from ADMM's weights; 10: error within ~0.1% of converged)
    cg_tol: float = 1e-5  # PCG stops a row at ‖r‖ ≤ cg_tol · ‖c‖ on its support
    dtype: Literal["auto", "float32", "float64"] = "auto"  # 'auto' (float64 if the problem is, else float32)

    def __post_init__(self) -> None:
        self._grams = _GramCache()

    def validate(self) -> None:
        if self.rho <= 0 or self.max_iter < 1 or self.check_every < 1 or self.min_iter < 0:
            raise ValueError("alps: rho must be > 0, max_iter ≥ 1, check_every ≥ 1 and min_iter ≥ 0")
        if self.stop_change < 0 or self.percdamp <= 0 or self.cg_iters < 0 or self.cg_tol < 0:
            raise ValueError("alps: stop_change ≥ 0, percdamp > 0, cg_iters ≥ 0 and cg_tol ≥ 0 are required")

    def solve(self, problem: LayerProblem) -> Solution:
        t0 = time.perf_counter()
        dt = work_dtype(problem.dtype, self.dtype)
        pat, keep = problem.pattern, problem.keep
        W = problem.W.to(dt)
        G = problem.G.to(dtype=dt, device=W.device)
        ng, cached = self._grams.get(G, self.percdamp, dt)
        t_eig = time.perf_counter() - t0
        W0 = W * ng.n[None, :]
        res = admm(ng, W0, pat, keep, rho=self.rho, max_iter=self.max_iter, check_every=self.check_every,
                   min_iter=self.min_iter, stop_change=self.stop_change)
        t_admm = time.perf_counter() - t0 - t_eig
        mask = pat.topk_mask(res.W * res.W, keep)
        admm_weight = (res.W * mask) / ng.n[None, :]
        if self.final == "exact":
            A = G / ng.n[:, None] / ng.n[None, :]
        else:
            A = ng.Ghat
        cg = masked_pcg(A, W0 @ A, mask, res.W, tol=self.cg_tol, max_iter=self.cg_iters)
        weight = (cg.X / ng.n[None, :]).to(problem.dtype)
        info = {
            "iterations": res.iterations,
            "rho": res.rho,
            "restarts": res.restarts,
            "last_support_change": res.last_change,
            "admm_error": problem.error(mask, admm_weight),
            "cg_iterations": cg.iterations,
            "cg_rows_converged": cg.converged,
            "cg_max_relative_residual": cg.max_relative_residual,
            "damp": ng.damp,
            "gram_cached": cached,
            "eig_seconds": t_eig,
            "admm_seconds": t_admm,
            "cg_seconds": time.perf_counter() - t0 - t_eig - t_admm,
        }
        return Solution(mask, weight, info)
