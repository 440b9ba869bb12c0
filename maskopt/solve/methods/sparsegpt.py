"""SparseGPT (Frantar & Alistarh 2023): OBS pruning with weight update, column by column.

With H = G + λI and U = chol(H⁻¹) (upper), pruning column j of the current weights
by q_j (0 where pruned) and spreading the error e = (w_j − q_j)/U_jj over the
remaining columns via W[:, j:] −= e U[j, j:] is the optimal OBS update.
The mask of each block of columns is chosen adaptively from w²/U_jj². For cs256 the blocks are
the 256-input tiles; how many weights each tile of a row keeps (a multiple of g) is fixed up front
by the cs256 chunk greedy on the initial scores w²/U_jj², then chosen adaptively inside each tile.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..layer_math import work_dtype
from ..patterns import TILE, tile_counts
from ..problem import LayerProblem, Solution
from .registry import register


def _inverse_cholesky(G: torch.Tensor, percdamp: float) -> tuple[torch.Tensor, float]:
    """Upper Cholesky factor of (G + λI)⁻¹ with λ = percdamp · mean(diag G); more damping if needed."""
    H = G.clone()
    d = H.shape[0]
    mean_diag = float(H.diagonal().mean())
    damp = percdamp * (mean_diag if mean_diag > 0 else 1.0)
    eye = torch.eye(d, dtype=H.dtype, device=H.device)
    for _ in range(8):
        L, info = torch.linalg.cholesky_ex(H + damp * eye)
        if int(info) == 0:
            Hinv = torch.cholesky_inverse(L)
            U, info = torch.linalg.cholesky_ex(Hinv, upper=True)
            if int(info) == 0:
                return U, damp
        damp *= 10.0
    raise RuntimeError("SparseGPT: Hessian is not positive definite even after strong dampening")


def _prune_counts(total: int, d: int, i1: int, i2: int) -> int:
    """How many of ``total`` pruned entries fall in columns [i1, i2): floor-telescoping, so blocks sum exactly."""
    return total * i2 // d - total * i1 // d


@register("sparsegpt")
@dataclass
class SparseGPT:
    blocksize: int = 128  # columns per lazy-update block
    percdamp: float = 0.01  # damping λ = percdamp · mean(diag G)

    def validate(self) -> None:
        if self.blocksize < 1 or self.percdamp < 0:
            raise ValueError(f"sparsegpt: blocksize must be ≥ 1 and percdamp ≥ 0, got {self.blocksize}, {self.percdamp}")

    def solve(self, problem: LayerProblem) -> Solution:
        dtype = work_dtype(problem.dtype)
        W = problem.W.to(dtype).clone()
        G = problem.G.to(dtype).clone()
        rows, d = W.shape
        pat = problem.pattern
        dead = G.diagonal() == 0
        G[dead, dead] = 1.0
        W[:, dead] = 0.0
        U, damp = _inverse_cholesky(G, self.percdamp)

        prune_row = d - problem.keep if pat.kind == "per_row" else 0
        prune_all = rows * d - problem.keep if pat.kind == "unstructured" else 0
        mask = torch.ones(rows, d, dtype=torch.bool, device=W.device)  # True = kept
        bs = max(pat.m, self.blocksize // pat.m * pat.m) if pat.kind == "nm" else self.blocksize
        if pat.kind == "cs256":
            bs = TILE
            tile_keep = tile_counts(pat.topk_mask(W**2 / U.diagonal()[None, :] ** 2, problem.keep))
        for i1 in range(0, d, bs):
            i2 = min(i1 + bs, d)
            W1 = W[:, i1:i2].clone()
            U1 = U[i1:i2, i1:i2]
            Q1 = torch.zeros_like(W1)
            E1 = torch.zeros_like(W1)
            M1 = torch.ones_like(W1, dtype=torch.bool)
            score = W1**2 / U1.diagonal()[None, :] ** 2
            if pat.kind == "per_row":
                n = _prune_counts(prune_row, d, i1, i2)
                idx = torch.argsort(score, dim=1, stable=True)[:, :n]
                M1.scatter_(1, idx, False)
            elif pat.kind == "cs256":
                n = (i2 - i1) - tile_keep[:, i1 // TILE]  # pruned per row in this tile
                order = torch.argsort(score, dim=1, stable=True)
                keep1 = torch.arange(i2 - i1, device=W.device)[None, :] >= n[:, None]
                M1.scatter_(1, order, keep1)
            elif pat.kind == "unstructured":
                n = _prune_counts(prune_all, d, i1, i2)
                flat = torch.argsort(score.reshape(-1), stable=True)[:n]
                M1.view(-1)[flat] = False
            for i in range(i2 - i1):
                if pat.kind == "nm" and i % pat.m == 0:
                    s = W1[:, i : i + pat.m] ** 2 / U1.diagonal()[i : i + pat.m][None, :] ** 2
                    idx = torch.argsort(s, dim=1, stable=True)[:, : pat.m - pat.n]
                    M1[:, i : i + pat.m].scatter_(1, idx, False)
                w = W1[:, i]
                q = w * M1[:, i]
                Q1[:, i] = q
                e = (w - q) / U1[i, i]
                W1[:, i:] -= e[:, None] * U1[i, i:][None, :]
                E1[:, i] = e
            W[:, i1:i2] = Q1
            mask[:, i1:i2] = M1
            W[:, i2:] -= E1 @ U[i1:i2, i2:]
        W = (W * mask).to(problem.dtype)
        info = {"damp": damp, "mask_only_error": problem.error(mask)}
        return Solution(mask, W, info)
