"""2:4 linears on the GPU's sparse tensor cores: ``torch.sparse.to_sparse_semi_structured`` (CUDA only).

The semi-structured tensor keeps the rows × d/2 kept values plus 2-bit in-block indices (the 2:4
metadata) and runs y = x Wᵀ on sparse tensor cores. Not a disk format: it converts a loaded model.
"""
from __future__ import annotations

import torch

from .compressed_tensors import fits_24


def to_semi_structured(model: torch.nn.Module) -> int:
    """Replace the weights of every 2:4 sparse nn.Linear (lm_head aside, float16/bfloat16, on CUDA) by
    semi-structured sparse tensors; returns how many were converted. Raises without CUDA."""
    if not torch.cuda.is_available():
        raise RuntimeError("2:4 semi-structured sparsity needs a CUDA GPU with sparse tensor cores")
    from torch.sparse import to_sparse_semi_structured

    n = 0
    for name, mod in model.named_modules():
        if not isinstance(mod, torch.nn.Linear) or name.split(".")[-1] == "lm_head":
            continue
        W = mod.weight.detach()
        if W.device.type != "cuda" or W.dtype not in (torch.float16, torch.bfloat16) or not fits_24(W):
            continue
        if W.shape[0] % 64 or W.shape[1] % 128:  # the kernels' minimum tile shapes
            continue
        mod.weight = torch.nn.Parameter(to_sparse_semi_structured(W), requires_grad=False)
        n += 1
    return n
