"""Real layer data for the benchmarks: W and G = Σ x xᵀ (float64) of every linear layer of one block.

Collected with forward hooks on the dense model (no pruning upstream) and cached under /tmp.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

SHARED = Path(__file__).resolve().parents[2] / "shared"
MODEL = SHARED / "models" / "maskopt-tiny-llama"
CALIB = SHARED / "data" / "english-calib" / "calib.txt"


def block_layers(block: int = 0, nsamples: int = 32, seqlen: int = 256, seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{name: (W, G)} for the nn.Linear layers of ``model.layers[block]``."""
    cache = Path(os.environ.get("TMPDIR", "/tmp")) / f"maskopt_bench_grams_b{block}_{nsamples}x{seqlen}_{seed}.pt"
    if cache.exists():
        return torch.load(cache)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from maskopt.data import calibration_windows, tokenize

    tok = AutoTokenizer.from_pretrained(MODEL)
    model = AutoModelForCausalLM.from_pretrained(MODEL, torch_dtype=torch.float32).eval()
    ids = calibration_windows(tokenize(tok, CALIB.read_text()), nsamples, seqlen, seed)
    blk = model.model.layers[block]
    grams: dict[str, torch.Tensor] = {}
    hooks = []
    for name, mod in blk.named_modules():
        if isinstance(mod, torch.nn.Linear):
            def hook(m, inp, out, name=name):
                x = inp[0].reshape(-1, inp[0].shape[-1]).to(torch.float64)
                grams[name] = grams.get(name, 0) + x.T @ x
            hooks.append(mod.register_forward_hook(hook))
    with torch.no_grad():
        for i in range(0, len(ids), 8):
            model(ids[i : i + 8])
    for h in hooks:
        h.remove()
    out = {n: (dict(blk.named_modules())[n].weight.detach().to(torch.float64).clone(), G) for n, G in grams.items()}
    torch.save(out, cache)
    return out


if __name__ == "__main__":
    for n, (W, G) in block_layers().items():
        print(n, tuple(W.shape), float(torch.linalg.eigvalsh(G)[0]), float(G.diagonal().mean()))
