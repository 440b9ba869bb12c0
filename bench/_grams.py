"""Real layer problems for the benchmarks from the package's own block walk and Gram collection.

``real_layers(model, calib, blocks, nsamples, seqlen)`` → {name: (W, G)} (float32 W, float64 G) of
the dense model's linear layers in the chosen blocks (G = Σ x xᵀ on the dense block inputs), via
``maskopt.model.calibrate.walk_blocks`` / ``collect_grams``; cached under $TMPDIR.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from maskopt.config import PruneConfig
from maskopt.model.adapters import get_adapter
from maskopt.model.calibrate import collect_grams, walk_blocks
from maskopt.model.loading import load_model
from maskopt.pipeline import make_windows


class _Done(Exception):
    pass


def real_layers(model: str | Path, calib: str | Path, blocks: list[int], nsamples: int = 128,
                seqlen: int = 256, seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    key = hashlib.sha1(f"{Path(model).resolve()}|{calib}|{blocks}|{nsamples}|{seqlen}|{seed}".encode()).hexdigest()[:12]
    cache = Path(os.environ.get("TMPDIR", "/tmp")) / f"maskopt_grams_{key}.pt"
    if cache.exists():
        return torch.load(cache)
    net, tok = load_model(model)
    net.config.use_cache = False
    adapter = get_adapter(net)
    windows = make_windows([str(calib)], tok, net, PruneConfig(nsamples=nsamples, seqlen=seqlen, seed=seed))
    out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def step(i: int, block, batches) -> None:
        if i in blocks:
            grams = collect_grams(block, adapter, batches, torch.device("cpu"))
            for name, mod in adapter.linears(block).items():
                out[f"{adapter.blocks}.{i}.{name}"] = (adapter.get_weight(mod).detach().to(torch.float32).clone(),
                                                       grams[name])
        if i >= max(blocks):
            raise _Done

    try:
        walk_blocks(net, adapter, windows, step, device="cpu", progress=False)
    except _Done:
        pass
    torch.save(out, cache)
    return out
