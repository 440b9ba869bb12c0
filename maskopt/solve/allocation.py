"""How much to prune where: uniform, or outlier-weighted layer-wise sparsity (OWL, Yin et al. 2024).

OWL scores every weight of decoder block l by Wanda's A_ij = |W_ij|·‖x_j‖ (over all its prunable linears)
and measures its outlier share D_l = #{A_ij > M · mean(A)} / #A. Blocks with more outliers keep more:
the densities 1 − s_l are D_l rescaled to a range of width 2λ, shifted so that their mean is 1 − S
(blocks have equal size, so the global sparsity stays S):

    1 − s_l = 2λ (D_l − min D) / (max D − min D) − mean(...) + (1 − S).
"""
from __future__ import annotations

import torch


def outlier_share(scores: list[torch.Tensor], m: float) -> float:
    """D = share of entries of all ``scores`` above ``m`` times their mean."""
    flat = torch.cat([s.reshape(-1).to(torch.float64) for s in scores])
    return float((flat > m * flat.mean()).to(torch.float64).mean())


def owl_sparsities(shares: list[float], target: float, lam: float) -> list[float]:
    """Per-block sparsities with mean ``target`` from outlier shares (more outliers → less pruning)."""
    if not 0 <= lam < 0.5:
        raise ValueError(f"OWL λ must be in [0, 0.5), got {lam}")
    d = torch.tensor(shares, dtype=torch.float64)
    span = float(d.max() - d.min())
    dens = (d - d.min()) / span * (2 * lam) if span > 0 else torch.zeros_like(d)
    dens = dens - dens.mean() + (1.0 - target)
    s = (1.0 - dens).tolist()
    if min(s) < 0 or max(s) >= 1:
        raise ValueError(f"OWL with λ={lam} around sparsity {target} gives block sparsities outside [0, 1): "
                         f"{min(s):.3f}..{max(s):.3f}; lower owl_lambda")
    return s
