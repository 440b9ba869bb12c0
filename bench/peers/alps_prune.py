"""Prune with the ALPS authors' own solver (mazumder-lab/ALPS `alps.py`, class `ALPS_prune`), driven block by block
on a Llama-family model as their `llama.py` does (`llama_sequential`): every linear layer of a block is hooked in
one forward pass of the block over the calibration windows (its `add_batch` accumulates XᵀX), then each layer is
solved with `ALPS_admm(sp, nm_n, nm_m, rho=0.1)` (the call their driver makes), then the pruned block's outputs
become the next block's inputs.

Their code is read at run time from the checkout given by --alps-src, never copied into this repository; the
only change is made in memory at load time: the hard-coded CUDA device ('cuda:0') becomes --device and
`torch.cuda.synchronize()` a no-op on CPU (the number of each replacement is checked, so a changed upstream file
fails loudly). Runs in maskopt's environment (torch, transformers, numpy). Writes a plain HF folder and
OUT/peer_run.json.

    .venv/bin/python bench/peers/alps_prune.py --alps-src ~/.cache/maskopt/alps-src --model DIR --windows W.npy \
        --sparsity 0.7 --out OUT
"""
from __future__ import annotations

import argparse
import hashlib
import json
import resource
import shutil
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

REPLACEMENTS = {"'cuda:0'": None, "torch.cuda.synchronize()": "None"}  # None: the device literal


def load_alps(src_dir: str | Path, device: str) -> tuple[types.ModuleType, dict]:
    """The authors' alps.py as a module, with the CUDA device replaced in memory; returns (module, provenance)."""
    path = Path(src_dir) / "alps.py"
    if not path.is_file():
        raise SystemExit(f"{path} does not exist: give --alps-src the folder of a mazumder-lab/ALPS checkout")
    src = path.read_text()
    counts = {}
    for old, new in REPLACEMENTS.items():
        counts[old] = src.count(old)
        if counts[old] == 0:
            raise SystemExit(f"{path}: expected {old!r} in the authors' code; the upstream file changed")
        src = src.replace(old, repr(device) if new is None else new)
    mod = types.ModuleType("alps_upstream")
    mod.__file__ = str(path)
    exec(compile(src, str(path), "exec"), mod.__dict__)  # noqa: S102 - the authors' code, by the user's choice
    return mod, {"alps_py": str(path), "alps_py_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                 "replacements": counts, "device": device}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--alps-src", required=True, help="folder of a mazumder-lab/ALPS checkout (holds alps.py)")
    ap.add_argument("--model", required=True)
    ap.add_argument("--windows", required=True, help=".npy of calibration token ids (nsamples × seqlen)")
    ap.add_argument("--sparsity", type=float, required=True)
    ap.add_argument("--nm", default="0:0", help="N:M (their nm_n:nm_m); 0:0 unstructured per matrix")
    ap.add_argument("--rho", type=float, default=0.1, help="initial rho (their llama.py passes 0.1)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--blocks", type=int, default=None, help="prune only the first N blocks (a quick check)")
    a = ap.parse_args()

    import numpy as np
    import torch
    from safetensors.torch import save_file

    sys.path.insert(0, str(ROOT))
    from maskopt.model.adapters import get_adapter
    from maskopt.model.calibrate import capture_block_inputs, run_block
    from maskopt.model.loading import load_model

    torch.set_num_threads(a.threads)
    alps, prov = load_alps(a.alps_src, a.device)
    nm_n, nm_m = (int(x) for x in a.nm.split(":"))
    ids = torch.from_numpy(np.load(a.windows)).long()
    model, tok = load_model(a.model, progress=False)
    model.eval()
    adapter = get_adapter(model)
    dev = torch.device(a.device)
    t = time.time()
    with torch.no_grad():
        batches = capture_block_inputs(model, adapter, ids, dev, batch_size=8)
        blocks = adapter.get_blocks(model)
        errors = {}
        for i, block in enumerate(blocks):
            if a.blocks is not None and i >= a.blocks:
                break
            block.to(dev)
            linears = {n: m for n, m in block.named_modules() if isinstance(m, torch.nn.Linear)}
            solvers = {n: alps.ALPS_prune(m, nsamples=ids.shape[0], seqlen=ids.shape[1]) for n, m in linears.items()}
            handles = [m.register_forward_hook(lambda _m, inp, out, s=solvers[n]: s.add_batch(inp[0].data, out.data))
                       for n, m in linears.items()]
            run_block(block, batches, dev)
            for h in handles:
                h.remove()
            for n, s in solvers.items():
                ts = time.time()
                errors[f"{i}.{n}"] = (s.ALPS_admm(sp=a.sparsity, nm_n=nm_n, nm_m=nm_m, rho=a.rho), time.time() - ts)
                s.free()
            del solvers
            batches = run_block(block, batches, dev)
            print(f"block {i}: " + ", ".join(f"{n} {errors[f'{i}.{n}'][0]:.4f}" for n in linears)
                  + f" ({time.time() - t:.0f} s)", file=sys.stderr, flush=True)
    seconds = time.time() - t
    out = Path(a.out)
    if out.exists():
        shutil.rmtree(out)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    run = {"peer": "ALPS (authors' code)", "tool": "mazumder-lab/ALPS alps.py", **prov, "torch": torch.__version__,
           "call": {"sp": a.sparsity, "nm_n": nm_n, "nm_m": nm_m, "rho": a.rho},
           "pattern": "unstructured" if nm_n == 0 else f"{nm_n}:{nm_m}", "prune_seconds": seconds,
           "prune_threads": a.threads, "prune_peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "windows": str(a.windows), "windows_sha256": hashlib.sha256(ids.numpy().astype(np.int64).tobytes()).hexdigest(),
           "calibration": f"{ids.shape[0]}x{ids.shape[1]}", "blocks_pruned": a.blocks or len(blocks),
           "layer_relative_errors": {k: v[0] for k, v in errors.items()},
           "layer_seconds": {k: v[1] for k, v in errors.items()}}
    (out / "peer_run.json").write_text(json.dumps(run, indent=2))
    print(json.dumps({k: v for k, v in run.items() if not k.startswith("layer_")}))


if __name__ == "__main__":
    main()
