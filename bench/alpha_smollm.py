"""SparseFW's fixed ratio α on SmolLM2-135M: per-layer rounded error relative to Wanda, alone and with
SparseSwaps (defaults) on top.

    .venv/bin/python bench/alpha_smollm.py [--blocks 1] [--layers q_proj o_proj gate_proj down_proj]

Grams of the dense model from 32 × 256 tokens of ../shared/data/wikitext-2/valid.txt (maskopt.model.calibrate,
bench/_layers.py). SparseFW with its defaults (exact line search, T ≤ 200, relative-gap stop) and
keep_best off, so the raw rounded FW mask is measured. Results: bench/results/alpha_smollm.{json,md}.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from _layers import smollm_block_layers  # noqa: E402
from common import save  # noqa: E402
from maskopt.solve.methods import get_method  # noqa: E402
from maskopt.solve.problem import LayerProblem  # noqa: E402
from maskopt.solve.swaps import swap_refine  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--blocks", type=int, nargs="*", default=[1])
    ap.add_argument("--layers", nargs="*", default=["self_attn.q_proj", "self_attn.o_proj", "mlp.gate_proj",
                                                   "mlp.down_proj"])
    ap.add_argument("--alphas", type=float, nargs="*", default=[0.0, 0.5, 0.75, 0.9])
    ap.add_argument("--settings", nargs="*", default=["per_row:0.5", "2:4:0.5"])
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    data = smollm_block_layers(a.blocks, nsamples=32)
    rows = []
    for spec in a.settings:
        pat, sp = spec.rsplit(":", 1)
        for b in a.blocks:
            for name in a.layers:
                W, G = data[b][name]
                pr = LayerProblem(W.float(), G.float(), pat, float(sp), name=f"b{b}.{name}")
                wanda_mask = get_method("wanda").solve(pr).mask
                wanda = pr.error(wanda_mask)
                sw = swap_refine(pr.W, pr.G, wanda_mask, pr.pattern, pr.keep)
                rec = {"setting": spec, "layer": pr.name, "wanda_rel": wanda / pr.dense_energy(),
                       "wanda+swaps": pr.error(sw.mask) / wanda}
                for al in a.alphas:
                    t = time.perf_counter()
                    fw = get_method("sparsefw", alpha=al, keep_best=False).solve(pr)
                    t_fw = time.perf_counter() - t
                    r = swap_refine(pr.W, pr.G, fw.mask, pr.pattern, pr.keep)
                    rec[f"fw{al}"] = fw.info["rounded_error"] / wanda
                    rec[f"fw{al}+swaps"] = pr.error(r.mask) / wanda
                    rec[f"fw{al}_iterations"] = fw.info["iterations"]
                    rec[f"fw{al}_seconds"] = t_fw
                rows.append(rec)
                print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in rec.items()}, flush=True)
    lines = ["# SparseFW α on SmolLM2-135M (rounded error / Wanda, mean over layers; lower is better)", "",
             f"Blocks {a.blocks}, layers {', '.join(a.layers)}; 32 × 256 WikiText-2 calibration tokens; "
             "SparseFW defaults (exact line search, T ≤ 200, rel. gap 0.02), keep_best off; SparseSwaps defaults.", "",
             "| setting | Wanda+swaps | " + " | ".join(f"α={al} FW / FW+swaps" for al in a.alphas) + " |",
             "|---|---|" + "---|" * len(a.alphas)]
    summary = {}
    for spec in a.settings:
        rs = [r for r in rows if r["setting"] == spec]
        cells = []
        for al in a.alphas:
            m1 = statistics.mean(r[f"fw{al}"] for r in rs)
            m2 = statistics.mean(r[f"fw{al}+swaps"] for r in rs)
            summary[f"{spec} α={al}"] = (m1, m2)
            cells.append(f"{m1:.4f} / {m2:.4f}")
        ws = statistics.mean(r["wanda+swaps"] for r in rs)
        lines.append(f"| {spec} | {ws:.4f} | " + " | ".join(cells) + " |")
    save("alpha_smollm", {"rows": rows, "summary": summary, "blocks": a.blocks, "layers": a.layers,
                          "calibration": "32 x 256 wikitext-2 valid"}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
