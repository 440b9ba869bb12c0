"""Real layer data for the benchmarks: W and G = Σ x xᵀ of every prunable linear of chosen blocks.

Collected with the package's own block walker (``maskopt.model.calibrate.dense_layer_data``) on the dense model
(no pruning upstream) and cached under $TMPDIR (never in the repository).

    layers(model, calib, blocks)        {full layer name: (W float32, G float64)}
    block_layers(block)                 {name in block: (W float64, G float64)} of the tiny model (english-calib)
    smollm_block_layers(blocks)         {block: {name in block: (W float32, G float64)}} of SmolLM2 (WikiText-2 valid)
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from common import SHARED
MODEL = SHARED / "models" / "maskopt-tiny-llama"
CALIB = SHARED / "data" / "english-calib" / "calib.txt"
SMOLLM = SHARED / "models" / "smollm2-135m-instruct-q4_1"
WIKI_VALID = SHARED / "data" / "wikitext-2" / "valid.txt"


def layers(model: str | Path, calib: str | Path, blocks: list[int], nsamples: int = 128, seqlen: int = 256,
           seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{full layer name: (W (rows × d), G)} (float64) of every prunable linear of ``blocks``."""
    key = hashlib.sha1(f"{Path(model).resolve()}|{calib}|{sorted(blocks)}|{nsamples}|{seqlen}|{seed}".encode())
    cache = Path(os.environ.get("TMPDIR", "/tmp")) / f"maskopt_bench_layers_{key.hexdigest()[:16]}.pt"
    if cache.exists():
        return torch.load(cache)
    from maskopt.data import make_windows
    from maskopt.model.adapters import get_adapter
    from maskopt.model.calibrate import dense_layer_data
    from maskopt.model.loading import load_model

    net, tok = load_model(model, progress=False)
    adapter = get_adapter(net)
    windows = make_windows([str(calib)], tok, net, nsamples, seqlen, seed)
    out = dense_layer_data(net, adapter, windows, blocks)
    torch.save(out, cache)
    return out


def _in_block(data: dict, block: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    mid = f".{block}."
    return {name.split(mid, 1)[1]: wg for name, wg in data.items() if mid in name}


def block_layers(block: int = 0, nsamples: int = 32, seqlen: int = 256, seed: int = 0, model_path: Path = MODEL,
                 calib: Path = CALIB) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{name in block: (W, G)} (float64) of block ``block`` (default: the tiny model on english-calib)."""
    return _in_block(layers(model_path, calib, [block], nsamples, seqlen, seed), block)


def smollm_block_layers(blocks: list[int], nsamples: int = 128, seqlen: int = 256,
                        seed: int = 0) -> dict[int, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """{block: {name in block: (W float32, G float64)}} of SmolLM2-135M on WikiText-2 valid."""
    data = layers(SMOLLM, WIKI_VALID, blocks, nsamples, seqlen, seed)
    return {b: {n: (W.to(torch.float32), G) for n, (W, G) in _in_block(data, b).items()} for b in blocks}


def real_layers(model: str | Path, calib: str | Path, blocks: list[int], nsamples: int = 128, seqlen: int = 256,
                seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{full layer name: (W float32, G float64)}."""
    return {n: (W.to(torch.float32), G) for n, (W, G) in layers(model, calib, blocks, nsamples, seqlen, seed).items()}


if __name__ == "__main__":
    for n, (W, G) in block_layers().items():
        print(n, tuple(W.shape), float(torch.linalg.eigvalsh(G)[0]), float(G.diagonal().mean()))
