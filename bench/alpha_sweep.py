"""Choose SparseFW's fixed ratio α by measurement: relative layer error vs Wanda for a grid of α.

    .venv/bin/python bench/alpha_sweep.py [--blocks 0 3] [--iterations 2000] [--random]

Real layers come from bench/_layers.py (dense tiny Llama, 32×256 calibration tokens per block);
--random adds synthetic problems (maskopt.solve.oracles.random_problem). Prints the mean error ratio
rounded-SparseFW / Wanda (and after SparseSwaps) per α and pattern.
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

from maskopt.solve.methods import get_method  # noqa: E402
from maskopt.solve.problem import LayerProblem  # noqa: E402
from maskopt.solve.swaps import swap_refine  # noqa: E402


def layers(blocks: list[int], random: bool):
    if random:
        from maskopt.testing import random_problem

        for s in range(4):
            yield f"random{s}", *random_problem(128, 256, s)
    from _layers import block_layers

    for b in blocks:
        for name, (W, G) in block_layers(b).items():
            yield f"b{b}.{name}", W.float(), G.float()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--blocks", type=int, nargs="*", default=[0, 3])
    ap.add_argument("--alphas", type=float, nargs="*", default=[0.0, 0.25, 0.5, 0.75])
    ap.add_argument("--patterns", nargs="*", default=["per_row:0.6", "2:4:0.5"])
    ap.add_argument("--iterations", type=int, default=2000)
    ap.add_argument("--random", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    data = list(layers(a.blocks, a.random))
    for spec in a.patterns:
        pat, sp = spec.rsplit(":", 1)
        ratios: dict[float, list[float]] = {al: [] for al in a.alphas}
        swap_ratios: dict[float, list[float]] = {al: [] for al in a.alphas}
        t0 = time.time()
        for name, W, G in data:
            pr = LayerProblem(W, G, pat, float(sp), name=name)
            wanda = pr.error(get_method("wanda").solve(pr).mask)
            for al in a.alphas:
                fw = get_method("sparsefw", alpha=al, iterations=a.iterations, keep_best=False).solve(pr)
                ratios[al].append(fw.info["rounded_error"] / wanda)


                r = swap_refine(pr.W, pr.G, fw.mask, pr.pattern, pr.keep, 100)
                swap_ratios[al].append(pr.error(r.mask) / wanda)
        print(f"pattern {pat} sparsity {sp}  ({len(data)} layers, T={a.iterations}, {time.time() - t0:.0f}s)")
        print("  alpha  FW/Wanda mean  median   FW+swaps/Wanda mean  median")
        for al in a.alphas:
            print(f"  {al:4.2f}   {statistics.mean(ratios[al]):.4f}      {statistics.median(ratios[al]):.4f}"
                  f"   {statistics.mean(swap_ratios[al]):.4f}             {statistics.median(swap_ratios[al]):.4f}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
