"""Benchmark (not a test): exact B&B vs SCIP's MIQP, and certified gaps on real layers.

Part A — time to proven optimality on per-row instances built from real layer rows
(d columns chosen at random from one row of a real layer, G restricted to them), 50% and
2:4, ours vs SCIP (pyscipopt, single thread) on the same instances; ratio = SCIP / ours.
Part B — full-width layers of one block: the root lower bound (certify.relaxation_bound,
default per-row optimised shift; the Jacobi-shift bound is kept as jacobi_lower_bound)
and the certified gap (err − LB)/err of the Wanda, SparseGPT, SparseFW and SparseSwaps masks.

    .venv/bin/python bench/exact.py [--dims 20,30,40,60] [--instances 2] [--block 0]
Writes bench/results/exact.json and bench/results/exact.md.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from _layers import block_layers  # noqa: E402
from maskopt.solve.bnb.lmo import MaskLMO  # noqa: E402
from maskopt.solve.bnb.mask import solve_row  # noqa: E402
from maskopt.certify.bounds import relaxation_bound  # noqa: E402
from maskopt.solve.methods import get_method  # noqa: E402
from maskopt.solve.problem import LayerProblem  # noqa: E402


def part_a(layers: dict, layer: str, dims: list[int], n_inst: int, scip_limit: float) -> list[dict]:
    from maskopt.testing import scip_row

    W, G = (t.numpy() for t in layers[layer])
    rng = np.random.default_rng(0)
    out = []
    for d in dims:
        for pattern in ("per_row", "nm"):
            if pattern == "nm" and d % 4:
                continue
            keep = d // 2 if pattern == "per_row" else 2
            lmo = MaskLMO.for_pattern(d, pattern, keep, 4)
            for k in range(n_inst):
                cols = np.sort(rng.choice(W.shape[1], d, replace=False))
                i = int(rng.integers(W.shape[0]))
                w, g = W[i, cols], G[np.ix_(cols, cols)]
                r = solve_row(w, g, lmo)
                s = scip_row(w, g, pattern, keep, 4, time_limit=scip_limit)
                rec = {
                    "layer": layer, "d": d, "pattern": "50%" if pattern == "per_row" else "2:4", "instance": k,
                    "ours_time": r.time, "ours_status": r.status, "ours_value": r.error, "ours_nodes": r.nodes,
                    "ours_root_gap": (r.error - r.root_bound) / r.error if r.error else 0.0,
                    "scip_time": s["time"], "scip_status": s["status"], "scip_value": s["value"],
                    # SCIP optimal: same value; SCIP at its limit: ours no worse than SCIP's incumbent
                    "agree": (abs(r.error - s["value"]) <= 1e-5 * max(abs(s["value"]), 1e-12))
                    if s["status"] == "optimal" else r.error <= s["value"] * (1 + 1e-6),
                }
                rec["ratio"] = rec["scip_time"] / max(rec["ours_time"], 1e-9)
                print(json.dumps(rec), flush=True)
                out.append(rec)
    return out


def part_b(layers: dict, patterns: list[str], methods: list[str], iterations: int, only: str = "") -> list[dict]:
    out = []
    for name, (W, G) in layers.items():
        if only and name not in only.split(","):
            continue
        for pat in patterns:
            p = LayerProblem(W, G, pat, 0.5, name=name)
            t0 = time.perf_counter()
            lb_rows, info = relaxation_bound(p, iterations=iterations, shift="rowwise")
            lb = float(lb_rows.clamp_min(0).sum())
            t_bound = time.perf_counter() - t0
            rec = {"layer": name, "shape": list(W.shape), "pattern": pat, "root_lower_bound": lb,
                   "bound_time": t_bound, "mu": info["mu"], "relaxed_value": info["relaxed_value"],
                   "shift": info.get("shift", ""), "jacobi_lower_bound": info.get("jacobi_bound", lb)}
            for m in methods:
                t1 = time.perf_counter()
                mask = get_method(m).solve(p).mask
                err = p.error(mask)
                rec[f"{m}_error"] = err
                rec[f"{m}_gap"] = (err - min(lb, err)) / err if err > 0 else 0.0
                rec[f"{m}_time"] = time.perf_counter() - t1
            best = min(methods, key=lambda m: rec[f"{m}_error"])
            rec["best_method"], rec["best_gap"] = best, rec[f"{best}_gap"]
            print(json.dumps(rec), flush=True)
            out.append(rec)
    return out


def markdown(a: list[dict], b: list[dict], methods: list[str]) -> str:
    lines = ["# Exact B&B and certified gaps", ""]
    if a:
        lines += ["## Time to proven optimality vs SCIP (per-row instances from real layer rows)", "",
                  "| d | pattern | ours (s, median) | SCIP (s, median) | ratio SCIP/ours (median) | agrees¹ | ours nodes (median) |",
                  "|---|---|---|---|---|---|---|"]
        keys = sorted({(r["d"], r["pattern"]) for r in a})
        for d, pat in keys:
            rs = [r for r in a if r["d"] == d and r["pattern"] == pat]
            med = lambda k: float(np.median([r[k] for r in rs]))
            scip_lim = any(r["scip_status"] != "optimal" for r in rs)
            agree = sum((abs(r["ours_value"] - r["scip_value"]) <= 1e-5 * max(abs(r["scip_value"]), 1e-12))
                        if r["scip_status"] == "optimal" else r["ours_value"] <= r["scip_value"] * (1 + 1e-6) for r in rs)
            ge = "≥" if scip_lim else ""
            lines.append(f"| {d} | {pat} | {med('ours_time'):.3f} | {ge}{med('scip_time'):.2f}{' (SCIP time limit hit)' if scip_lim else ''} | "
                         f"{ge}{med('ratio'):.0f}× | {agree}/{len(rs)} | {med('ours_nodes'):.0f} |")
        lines += ["", "¹ same optimum as SCIP when SCIP proves optimality; else ours (proven optimal) ≤ SCIP's incumbent.", ""]
    if b:
        lines += ["## Certified gaps at full width (root relaxation bound, 50% sparsity)", "",
                  "| layer | pattern | shift | Jacobi LB | root LB | " + " | ".join(f"{m} gap" for m in methods) + " | best |",
                  "|---|---|---|---|---|" + "---|" * len(methods) + "---|"]
        for r in b:
            jl = r.get("jacobi_lower_bound")
            lines.append(f"| {r['layer']} | {r['pattern']} | {r.get('shift', 'jacobi')} | {'—' if jl is None else f'{jl:.4g}'} | {r['root_lower_bound']:.4g} | "
                         + " | ".join(f"{100 * r[f'{m}_gap']:.1f}%" if f"{m}_gap" in r else "—" for m in methods)
                         + f" | {r['best_method']} ({100 * r['best_gap']:.1f}%) |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dims", default="20,30,40,60")
    ap.add_argument("--instances", type=int, default=2)
    ap.add_argument("--layer", default="self_attn.q_proj")
    ap.add_argument("--block", type=int, default=0)
    ap.add_argument("--scip-limit", type=float, default=30.0)
    ap.add_argument("--patterns", default="per_row,2:4")
    ap.add_argument("--methods", default="wanda,sparsegpt,sparsefw,sparseswaps")
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--b-layers", default="", help="part B: only these layers (comma list; default all)")
    ap.add_argument("--skip-a", action="store_true")
    ap.add_argument("--skip-b", action="store_true")
    ap.add_argument("--out", default=str(HERE / "results" / "exact"))
    ap.add_argument("--merge", nargs="*", default=[], help="JSON results to merge (no runs): write one table")
    args = ap.parse_args()
    methods = args.methods.split(",")
    if args.merge:
        runs = [json.loads(Path(f).read_text()) for f in args.merge]
        a = [r for run in runs for r in run["timing"]]
        b = [r for run in runs for r in run["certified"]]
        Path(args.out + ".json").write_text(json.dumps({"args": [run["args"] for run in runs], "timing": a, "certified": b}, indent=1))
        Path(args.out + ".md").write_text(markdown(a, b, methods))
        print(markdown(a, b, methods))
        return
    torch.set_num_threads(2)
    layers = block_layers(args.block)
    methods = args.methods.split(",")
    a = [] if args.skip_a else part_a(layers, args.layer, [int(x) for x in args.dims.split(",")], args.instances, args.scip_limit)
    b = [] if args.skip_b else part_b(layers, args.patterns.split(","), methods, args.iterations, args.b_layers)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps({"args": vars(args), "timing": a, "certified": b}, indent=1))
    Path(args.out + ".md").write_text(markdown(a, b, methods))
    print(markdown(a, b, methods))


if __name__ == "__main__":
    main()
