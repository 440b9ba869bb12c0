"""The per-layer pruning problem every method solves.

For a linear layer with weight W (rows × d) and calibration inputs X (d × tokens),
with Gram matrix G = X Xᵀ, a mask M costs

    err(M) = ‖W X − (M⊙W) X‖²_F = Σ_i r_iᵀ G r_i,   r_i = w_i ⊙ (1 − m_i).

The relative error divides by the dense energy Σ_i w_iᵀ G w_i = ‖W X‖²_F.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from . import layer_math
from .patterns import Pattern


@dataclass
class LayerProblem:
    """W (rows × d), G (d × d), the pattern and the sparsity; everything a method may use."""

    W: torch.Tensor
    G: torch.Tensor
    pattern: Pattern = field(default_factory=Pattern)
    sparsity: float = 0.5
    name: str = ""
    seed: int = 0
    warm_mask: torch.Tensor | None = None  # a mask that exists already (the zeros of a model pruned elsewhere)

    def __post_init__(self) -> None:
        self.pattern = Pattern.parse(self.pattern)
        if self.W.ndim != 2:
            raise ValueError(f"{self.name}: W must be 2-D, got shape {tuple(self.W.shape)}")
        d = self.W.shape[1]
        if tuple(self.G.shape) != (d, d):
            raise ValueError(f"{self.name}: G must be {d}×{d}, got {tuple(self.G.shape)}")
        if not torch.isfinite(self.W).all():
            raise ValueError(f"layer {self.name or '?'}: weight contains NaN or Inf")
        if not torch.isfinite(self.G).all():
            raise ValueError(f"layer {self.name or '?'}: calibration activations contain NaN or Inf")
        self.keep = self.pattern.keep_per_group(self.rows, self.d, self.sparsity)

    # ---- shape facts ----------------------------------------------------------------
    @property
    def rows(self) -> int:
        return self.W.shape[0]

    @property
    def d(self) -> int:
        return self.W.shape[1]

    @property
    def device(self) -> torch.device:
        return self.W.device

    @property
    def dtype(self) -> torch.dtype:
        return self.W.dtype

    @property
    def kept_fraction(self) -> float:
        return 1.0 - self.pattern.sparsity_of(self.rows, self.d, self.sparsity)

    @property
    def input_norms(self) -> torch.Tensor:
        """‖x_j‖ for every input feature j: the square root of diag(G)."""
        return self.G.diagonal().clamp_min(0).sqrt()

    # ---- oracles and checks -----------------------------------------------------------
    def topk(self, scores: torch.Tensor) -> torch.Tensor:
        """Mask that keeps the highest scores within every constraint group."""
        return self.pattern.topk_mask(scores, self.keep)

    def is_feasible(self, mask: torch.Tensor) -> bool:
        return tuple(mask.shape) == tuple(self.W.shape) and self.pattern.counts_ok(mask, self.keep)

    # ---- objective -----------------------------------------------------------------------
    def row_errors(self, mask: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """Per-row error (float64): (w_i − ŵ_i)ᵀ G (w_i − ŵ_i), ŵ = mask ⊙ weight (see layer_math.row_errors)."""
        return layer_math.row_errors_f64(self.W, self.G, mask, weight)

    def error(self, mask: torch.Tensor, weight: torch.Tensor | None = None) -> float:
        """err(M) = Σ_i r_iᵀ G r_i, optionally with updated kept weights ``weight``."""
        return float(self.row_errors(mask, weight).sum())

    def dense_energy(self) -> float:
        return float(layer_math.row_errors_f64(self.W, self.G).sum())

    def relative_error(self, mask: torch.Tensor, weight: torch.Tensor | None = None) -> float:
        e = self.dense_energy()
        return self.error(mask, weight) / e if e > 0 else 0.0


@dataclass
class Solution:
    """What a method returns: a feasible mask and optionally updated kept weights."""

    mask: torch.Tensor
    weight: torch.Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)
