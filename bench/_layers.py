"""Real layer data for the benchmarks: W and G = Σ x xᵀ (float64) of every linear layer of one block.

Collected with the package's own block walker on the dense model (no pruning upstream); cached under /tmp.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

SHARED = Path(__file__).resolve().parents[2] / "shared"
MODEL = SHARED / "models" / "maskopt-tiny-llama"
CALIB = SHARED / "data" / "english-calib" / "calib.txt"


def block_layers(block: int = 0, nsamples: int = 32, seqlen: int = 256, seed: int = 0, model_path: Path = MODEL,
                 calib: Path = CALIB) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{name: (W, G)} for the prunable linears of block ``block`` (names relative to the block)."""
    tag = f"{Path(model_path).name}_{Path(calib).stem}_b{block}_{nsamples}x{seqlen}_{seed}"
    cache = Path(os.environ.get("TMPDIR", "/tmp")) / f"maskopt_bench_grams_{tag}.pt"
    if cache.exists():
        return torch.load(cache)
    from maskopt.data import make_windows
    from maskopt.model.adapters import get_adapter
    from maskopt.model.calibrate import dense_layer_data
    from maskopt.model.loading import load_model

    model, tok = load_model(model_path)
    adapter = get_adapter(model)
    windows = make_windows([str(calib)], tok, model, nsamples, seqlen, seed)
    data = dense_layer_data(model, adapter, windows, [block])
    prefix = adapter.layer_name(block, "")
    out = {name[len(prefix):]: wg for name, wg in data.items()}
    torch.save(out, cache)
    return out


if __name__ == "__main__":
    for n, (W, G) in block_layers().items():
        print(n, tuple(W.shape), float(torch.linalg.eigvalsh(G)[0]), float(G.diagonal().mean()))
