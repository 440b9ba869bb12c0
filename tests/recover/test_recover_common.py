"""Shared helpers for the recovery tests: tiny random models, pruned by Wanda with a hand-made loop."""
from __future__ import annotations

import copy

import torch

from maskopt.model.adapters import get_adapter
from maskopt.model.calibrate import collect_grams, walk_blocks
from maskopt.solve.methods import get_method
from maskopt.solve.problem import LayerProblem

VOCAB = 128


def tiny_model(family: str = "llama", seed: int = 0):
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, OPTConfig  # noqa: PLC0415

    torch.manual_seed(seed)
    if family == "llama":
        cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=64)
    elif family == "opt":
        cfg = OPTConfig(hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4, vocab_size=VOCAB,
                        max_position_embeddings=64, word_embed_proj_dim=32, enable_bias=True)
    elif family == "gpt2":
        cfg = GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=VOCAB, n_positions=64)
    else:
        raise ValueError(family)
    model = AutoModelForCausalLM.from_config(cfg)
    model.eval()
    return model


def windows(n: int = 8, seqlen: int = 16, seed: int = 0) -> torch.Tensor:
    """Token windows with some structure (a noisy repeating sequence) so a model can learn."""
    g = torch.Generator().manual_seed(seed)
    base = torch.arange(seqlen) * 7 % VOCAB
    noise = torch.randint(0, VOCAB, (n, seqlen), generator=g)
    keep = torch.rand(n, seqlen, generator=g) < 0.8
    return torch.where(keep, base.expand(n, seqlen), noise)


def prune(model, win: torch.Tensor, sparsity: float = 0.5, pattern: str = "per_row", method: str = "wanda"):
    """Prune in place with a registered method, block by block; returns the model."""
    adapter = get_adapter(model)
    m = get_method(method)

    def step(_i, block, batches):
        grams = collect_grams(block, adapter, batches, torch.device("cpu"))
        for name, mod in adapter.linears(block).items():
            W = adapter.get_weight(mod)
            sol = m.solve(LayerProblem(W.float(), grams[name], pattern, sparsity, name=name))
            adapter.set_weight(mod, W * sol.mask.to(W.dtype))

    walk_blocks(model, adapter, win, step, device="cpu", batch_size=4, progress=False)
    return model


def pruned_pair(family: str = "llama", sparsity: float = 0.5, pattern: str = "per_row"):
    """(dense, pruned, windows) for a tiny random model."""
    dense = tiny_model(family)
    win = windows()
    pruned = prune(copy.deepcopy(dense), win, sparsity, pattern)
    return dense, pruned, win


def masks_of(model) -> dict[str, torch.Tensor]:
    adapter = get_adapter(model)
    out = {}
    for i, block in enumerate(adapter.get_blocks(model)):
        for name, mod in adapter.linears(block).items():
            out[f"{i}.{name}"] = mod.weight.detach() != 0
    return out


def assert_mask_kept(model, masks: dict[str, torch.Tensor]) -> None:
    """Every pruned weight is still exactly zero (and the mask did not grow)."""
    now = masks_of(model)
    assert now.keys() == masks.keys()
    for k, m in masks.items():
        assert not now[k][~m].any(), f"{k}: pruned weights are no longer zero"
        assert (~m).sum() > 0, f"{k}: nothing was pruned"


import pytest  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_thread")
