"""Model adapters: where a family keeps its blocks and prunable linear layers.

An adapter holds no math. It names module paths; everything else (capturing
block inputs, running blocks) is generic.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


def get_submodule(root: nn.Module, path: str) -> nn.Module:
    return root.get_submodule(path) if path else root


@dataclass(frozen=True)
class Adapter:
    """Module paths of one model family.

    ``blocks``: path of the ModuleList of decoder blocks; ``linear_groups``: the
    prunable linear layers of a block (paths relative to the block), grouped by
    shared input (they share one Gram matrix); ``attn``/``mlp``: the attention and
    MLP sub-modules of a block (for sub-block reconstruction); ``attn_out_norm``: the
    module whose input is the residual stream after attention (for residual targets);
    ``transposed``: GPT-2's Conv1D stores weights as (in, out).
    """

    family: str
    model_types: tuple[str, ...]
    blocks: str
    linear_groups: tuple[tuple[str, ...], ...]
    attn: str
    mlp: str
    transposed: bool = False
    attn_out_norm: str = ""  # the first module that receives the residual stream after attention ("" if none)

    def get_blocks(self, model: nn.Module) -> nn.ModuleList:
        return get_submodule(model, self.blocks)  # type: ignore[return-value]

    def linear_names(self) -> list[str]:
        return [name for group in self.linear_groups for name in group]

    def linears(self, block: nn.Module) -> dict[str, nn.Module]:
        return {name: get_submodule(block, name) for name in self.linear_names()}

    def layer_name(self, index: int, name: str) -> str:
        """The full module path of linear ``name`` of block ``index`` (the key of reports and masks)."""
        return f"{self.blocks}.{index}.{name}"

    def named_linears(self, model: nn.Module) -> dict[str, nn.Module]:
        """Every prunable linear of the model by full module path, in forward order."""
        return {self.layer_name(i, n): m for i, b in enumerate(self.get_blocks(model)) for n, m in self.linears(b).items()}

    # weights are always seen as (out, in) = (rows, d)
    def get_weight(self, module: nn.Module) -> torch.Tensor:
        return module.weight.data.t() if self.transposed else module.weight.data

    def set_weight(self, module: nn.Module, W: torch.Tensor) -> None:
        W = W.to(module.weight.dtype)
        module.weight.data.copy_(W.t() if self.transposed else W)

    def param_layout(self, M: torch.Tensor) -> torch.Tensor:
        """A (rows, d) tensor in the layout of the module's weight parameter (and back: the map is an involution)."""
        return M.t() if self.transposed else M
