"""ALPS against SparseGPT (with and without the least-squares refit) on real SmolLM2-135M layers, one layer at a time.

Layers of chosen blocks with dense inputs (bench/_layers.py: 128 × 256 tokens of WikiText-2 valid, seed 0); per
layer and setting the relative error err / ‖WX‖² of each method's mask and weights, and its seconds (same run,
same threads). ALPS variants are given as 'alps' or 'alps:key=value,...'. Appends one JSON line per (layer,
setting, method) to bench/results/alps_layers.jsonl and rewrites bench/results/alps_layers.md.

    .venv/bin/python bench/alps_layers.py --blocks 1 --settings 50%:unstructured 70%:unstructured 70%:per_row
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, model_path  # noqa: E402

import torch  # noqa: E402

from _layers import WIKI_VALID, real_layers  # noqa: E402

NAME = "alps_layers"


def run(method: str, W: torch.Tensor, G: torch.Tensor, pattern: str, sparsity: float) -> dict:
    from maskopt.options import parse_kv
    from maskopt.solve.lstsq import layer_lstsq
    from maskopt.solve.methods import get_method
    from maskopt.solve.problem import LayerProblem

    name, _, opts = method.partition(":")
    refit = name.endswith("+refit")
    name = name.removesuffix("+refit")
    m = get_method(name, **parse_kv(opts.split(",") if opts else []))
    p = LayerProblem(W, G.to(torch.float32), pattern, sparsity)
    t = time.perf_counter()
    sol = m.solve(p)
    weight = layer_lstsq(p.W, p.G, sol.mask) if refit else sol.weight
    seconds = time.perf_counter() - t
    info = {k: v for k, v in sol.info.items() if isinstance(v, (int, float, bool, str))}
    return {"relative_error": p.relative_error(sol.mask, weight), "seconds": seconds, "info": info}


def table(rows: list[dict]) -> str:
    methods = list(dict.fromkeys(r["method"] for r in rows))
    keys = list(dict.fromkeys((r["layer"], r["setting"]) for r in rows))
    cell = {(r["layer"], r["setting"], r["method"]): r for r in rows}
    lines = ["| layer | setting | " + " | ".join(methods) + " |", "|---|---|" + "---:|" * len(methods)]
    for layer, setting in keys:
        out = []
        for m in methods:
            r = cell.get((layer, setting, m))
            out.append("–" if r is None else f"{r['relative_error']:.4f} ({r['seconds']:.1f} s)")
        lines.append(f"| {layer} | {setting} | " + " | ".join(out) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--blocks", type=int, nargs="+", default=[1])
    ap.add_argument("--layers", nargs="*", default=None, help="only these names in the block (e.g. mlp.down_proj)")
    ap.add_argument("--settings", nargs="+", default=["50%:unstructured", "70%:unstructured"])
    ap.add_argument("--methods", nargs="+", default=["sparsegpt", "sparsegpt+refit", "alps"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--name", default=NAME)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    data = real_layers(model_path("smollm"), WIKI_VALID, a.blocks)
    jsonl = RESULTS / f"{a.name}.jsonl"
    rows = [json.loads(x) for x in jsonl.read_text().splitlines() if x.strip()] if jsonl.exists() else []
    for full, (W, G) in data.items():
        if a.layers and not any(full.endswith(x) for x in a.layers):
            continue
        for setting in a.settings:
            sp, _, pattern = setting.partition(":")
            for method in a.methods:
                r = {"layer": full, "setting": setting, "method": method, "threads": a.threads,
                     **run(method, W, G, pattern or "per_row", float(sp.rstrip("%")) / 100)}
                print(json.dumps(r), flush=True)
                rows.append(r)
                with jsonl.open("a") as f:
                    f.write(json.dumps(r) + "\n")
    (RESULTS / f"{a.name}.md").write_text(table(rows))


if __name__ == "__main__":
    main()
