"""Per-layer relative error of every method on the same dense-model layer problems.

    .venv/bin/python bench/layer_error.py [--blocks 0 1 2 3 4 5] [--iterations 2000] [--out bench/results/layer_error.json]

Layer problems (W, G = Σ x xᵀ) are collected once from the *dense* tiny Llama with forward hooks
(bench/_layers.py: 32 windows × 256 tokens of ../shared/data/english-calib), so every method sees
exactly the same problems. Settings: 50/60/70 % per-row and 2:4. For every layer and method we
record err(M)/‖W X‖² and the wall time; the summary prints the mean relative error and the mean
and median error ratio vs Wanda (reduction = 1 − ratio).
SparseSwaps(SparseFW) is the registered method (its own FW warm start with α = 0.25, time included);
its '+refit' row adds the least-squares refit of the kept weights (same time column: refit included).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from maskopt.solve.methods import get_method  # noqa: E402
from maskopt.solve.problem import LayerProblem  # noqa: E402

SETTINGS = [("per_row", 0.5), ("per_row", 0.6), ("per_row", 0.7), ("2:4", 0.5)]
METHODS = ["wanda", "sparsegpt_mask", "sparsegpt", "ria", "dsnot", "sparsefw", "sparseswaps(wanda)",
           "sparseswaps(sparsefw)", "sparseswaps(sparsefw)+refit"]


def run_layer(pr: LayerProblem, fw_options: dict) -> dict[str, tuple[float, float]]:
    """{method: (relative error, seconds)} for one layer problem."""
    out: dict[str, tuple[float, float]] = {}
    energy = pr.dense_energy()

    def timed(name: str, **opt):
        t = time.perf_counter()
        sol = get_method(name, **opt).solve(pr)
        return sol, time.perf_counter() - t

    sol, s = timed("wanda")
    out["wanda"] = (pr.error(sol.mask) / energy, s)
    sol, s = timed("sparsegpt")
    out["sparsegpt_mask"] = (pr.error(sol.mask) / energy, s)
    out["sparsegpt"] = (pr.error(sol.mask, sol.weight) / energy, s)
    sol, s = timed("ria")
    out["ria"] = (pr.error(sol.mask) / energy, s)
    sol, s = timed("dsnot")
    out["dsnot"] = (pr.error(sol.mask) / energy, s)
    sol, s = timed("sparseswaps", max_iter=100)
    out["sparseswaps(wanda)"] = (sol.info["error"] / energy, s)
    fw, s_fw = timed("sparsefw", **fw_options)
    out["sparsefw"] = (fw.info["error"] / energy, s_fw)
    sw_opts = {k: v for k, v in fw_options.items() if k != "alpha"}  # SparseSwaps picks its own warm α
    sol, s = timed("sparseswaps", warm_start="sparsefw", warm_options=sw_opts)
    out["sparseswaps(sparsefw)"] = (sol.info["error"] / energy, s)
    from maskopt.solve.lstsq import layer_lstsq

    t = time.perf_counter()
    Wn = layer_lstsq(pr.W, pr.G, sol.mask)
    out["sparseswaps(sparsefw)+refit"] = (pr.error(sol.mask, Wn) / energy, s + time.perf_counter() - t)
    out["_fw_bounds"] = (fw.info["lower_bound"] / energy, fw.info["relaxed_value"] / energy)
    return out


def summarize(rows: list[dict], methods: list[str]) -> str:
    lines = ["| method | mean rel. err | mean ratio vs Wanda | median ratio | mean reduction | time/layer (s) |",
             "|---|---|---|---|---|---|"]
    for m in methods:
        rel = [r[m][0] for r in rows]
        ratio = [r[m][0] / r["wanda"][0] for r in rows]
        lines.append(f"| {m} | {statistics.mean(rel):.4f} | {statistics.mean(ratio):.3f} | "
                     f"{statistics.median(ratio):.3f} | {1 - statistics.mean(ratio):.1%} | "
                     f"{statistics.mean(r[m][1] for r in rows):.2f} |")
    lb = [r["_fw_bounds"][0] for r in rows]
    lines.append(f"\nSparseFW certified lower bound (mean rel.): {statistics.mean(lb):.4f}; "
                 f"relaxed value: {statistics.mean(r['_fw_bounds'][1] for r in rows):.4f}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--blocks", type=int, nargs="*", default=list(range(6)))
    ap.add_argument("--iterations", type=int, default=2000)
    ap.add_argument("--alpha", type=float, default=None)
    ap.add_argument("--step", default="agnostic")
    ap.add_argument("--settings", nargs="*", default=[f"{p}@{s}" for p, s in SETTINGS])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "layer_error.json"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from _layers import block_layers

    fw_options = {"iterations": a.iterations, "step": a.step}
    if a.alpha is not None:
        fw_options["alpha"] = a.alpha
    data = [(f"model.layers.{b}.{n}", W.float(), G.float()) for b in a.blocks for n, (W, G) in block_layers(b).items()]
    results: dict[str, list[dict]] = {}
    t0 = time.time()
    for spec in a.settings:
        pat, sp = spec.split("@")
        rows = []
        for name, W, G in data:
            r = run_layer(LayerProblem(W, G, pat, float(sp), name=name), fw_options)
            r["layer"] = name
            rows.append(r)
        results[spec] = rows
        print(f"\n### {spec}  ({len(rows)} layers, SparseFW T={a.iterations} step={a.step}, {time.time() - t0:.0f}s so far)")
        print(summarize(rows, METHODS))
        sys.stdout.flush()
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps({"fw_options": fw_options, "blocks": a.blocks, "results": results}, indent=1))


if __name__ == "__main__":
    main()
