"""The supported model families: one small Adapter value each."""
from __future__ import annotations

from .base import Adapter

_ATTN_QKV = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")

LLAMA = Adapter(
    family="llama",
    model_types=("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "olmo", "olmo2", "granite"),
    blocks="model.layers",
    linear_groups=(_ATTN_QKV, ("self_attn.o_proj",), ("mlp.gate_proj", "mlp.up_proj"), ("mlp.down_proj",)),
    attn="self_attn",
    mlp="mlp",
    attn_out_norm="post_attention_layernorm",
)

OPT = Adapter(
    family="opt",
    model_types=("opt",),
    blocks="model.decoder.layers",
    linear_groups=(_ATTN_QKV, ("self_attn.out_proj",), ("fc1",), ("fc2",)),
    attn="self_attn",
    mlp="",  # OPT's MLP is fc1/fc2 directly in the block, no sub-module
    attn_out_norm="final_layer_norm",
)

GPT2 = Adapter(
    family="gpt2",
    model_types=("gpt2",),
    blocks="transformer.h",
    linear_groups=(("attn.c_attn",), ("attn.c_proj",), ("mlp.c_fc",), ("mlp.c_proj",)),
    attn="attn",
    mlp="mlp",
    transposed=True,
    attn_out_norm="ln_2",
)

GPT_NEOX = Adapter(
    family="gpt_neox",
    model_types=("gpt_neox",),
    blocks="gpt_neox.layers",
    linear_groups=(("attention.query_key_value",), ("attention.dense",), ("mlp.dense_h_to_4h",), ("mlp.dense_4h_to_h",)),
    attn="attention",
    mlp="mlp",
)

FAMILIES = (LLAMA, OPT, GPT2, GPT_NEOX)
