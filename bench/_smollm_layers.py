"""Real SmolLM2-135M layer data for benchmarks: {name: (W, G)} of one block, collected with maskopt's own
calibration functions (capture_block_inputs → run_block over the dense blocks before → collect_grams).

Calibration: ``nsamples × seqlen`` tokens of ../shared/data/wikitext-2/valid.txt (seed 0), dense model
upstream (no pruning). Cached under $TMPDIR (never in the repository).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SMOLLM = SHARED / "models" / "smollm2-135m-instruct-q4_1"
WIKI_VALID = SHARED / "data" / "wikitext-2" / "valid.txt"


def smollm_block_layers(blocks: list[int], nsamples: int = 128, seqlen: int = 256,
                        seed: int = 0) -> dict[int, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """{block: {layer name: (W float32 (rows × d), G float64 (d × d))}} for the requested blocks."""
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))
    out: dict[int, dict[str, tuple[torch.Tensor, torch.Tensor]]] = {}
    missing = []
    for b in blocks:
        f = tmp / f"maskopt_smollm_grams_b{b}_{nsamples}x{seqlen}_{seed}.pt"
        if f.exists():
            out[b] = torch.load(f)
        else:
            missing.append(b)
    if not missing:
        return out
    from maskopt.data import calibration_windows, tokenize
    from maskopt.model.adapters import get_adapter
    from maskopt.model.calibrate import capture_block_inputs, collect_grams, run_block
    from maskopt.model.loading import load_model

    model, tok = load_model(SMOLLM)
    adapter = get_adapter(model)
    model.config.use_cache = False
    windows = calibration_windows(tokenize(tok, WIKI_VALID.read_text()), nsamples, seqlen, seed)
    dev = torch.device("cpu")
    batches = capture_block_inputs(model, adapter, windows, dev)
    blocks_mod = adapter.get_blocks(model)
    for i in range(max(missing) + 1):
        if i in missing:
            grams = collect_grams(blocks_mod[i], adapter, batches, dev)
            layers = {name: (adapter.get_weight(m).detach().to(torch.float32).clone(), grams[name])
                      for name, m in adapter.linears(blocks_mod[i]).items()}
            torch.save(layers, tmp / f"maskopt_smollm_grams_b{i}_{nsamples}x{seqlen}_{seed}.pt")
            out[i] = layers
        if i < max(missing):
            batches = run_block(blocks_mod[i], batches, dev)
    return out


if __name__ == "__main__":
    import sys

    for b, layers in smollm_block_layers([int(x) for x in sys.argv[1:]] or [1]).items():
        for n, (W, G) in layers.items():
            print(b, n, tuple(W.shape), float(G.diagonal().mean()))
