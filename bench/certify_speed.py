"""Benchmark (not a test): cost and tightness of the certified lower bounds on real layers.

For every linear layer of the chosen blocks (G = Σ x xᵀ of the dense model on calibration text,
collected with the package's own block walk, see bench/_layers.py) and the 50% per-row pattern:
the lower bound LB of each bound variant, its gap (err − LB)/err against the Wanda mask's error
err, and its cost (process CPU seconds and wall seconds, torch on ONE thread so that the
numbers do not depend on the other processes of a shared machine; the load average is recorded).

Variants: ``jacobi`` (the default of maskopt certify: Jacobi shift, float32 preconditioned FISTA,
≤ 300 iterations, stop when the FW gap is within 0.3% of the relaxed value, bound evaluated in
float64), ``jacobi-converged`` (same shift, 1500 iterations, no early stop: about what the
relaxation gives at convergence), ``layer`` (one optimised shift per layer), ``rowwise`` (per-row
shifts; only on layers with ≤ 256 rows and d ≤ 512, it costs O(rows·d³)), and, on the first tiny
block, the implementation before this change
(``old-jacobi``, ``old-rowwise``: commit 44a0cd8, float64 FISTA, 300 iterations, two matmuls per
iteration; ``old-rowwise`` was the default of ``maskopt certify``).

    PYTHONPATH=. .venv/bin/python bench/certify_speed.py [--tiny-blocks 0,1] [--smol-blocks 0,1,15]
Writes bench/results/certify_speed.json and bench/results/certify_speed.md.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from _layers import real_layers  # noqa: E402
from common import RESULTS, ROOT, SHARED, model_path, save  # noqa: E402
from maskopt.certify.bounds import relaxation_bound  # noqa: E402
from maskopt.solve.methods import get_method  # noqa: E402
from maskopt.solve.problem import LayerProblem  # noqa: E402

OLD_COMMIT = "44a0cd8"


def old_bounds_module():
    """maskopt/certify/bounds.py as of OLD_COMMIT, loaded inside the current package (same imports)."""
    src = subprocess.run(["git", "show", f"{OLD_COMMIT}:maskopt/certify/bounds.py"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "old_bounds.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("maskopt.certify._old_bounds", path)
    mod = importlib.util.module_from_spec(spec)
    mod.__package__ = "maskopt.certify"
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def timed(fn: Callable[[], tuple[torch.Tensor, dict]]) -> tuple[float, float, float, dict]:
    c, w = time.process_time(), time.perf_counter()
    b, info = fn()
    return float(b.clamp_min(0).sum()), time.process_time() - c, time.perf_counter() - w, info


def variants(p: LayerProblem, with_old: bool, old) -> dict[str, Callable[[], tuple[torch.Tensor, dict]]]:
    out = {
        "jacobi": lambda: relaxation_bound(p),
        "jacobi-converged": lambda: relaxation_bound(p, iterations=1500, tol=0.0),
        "layer": lambda: relaxation_bound(p, shift="layer"),
    }
    small = p.d <= 512 and p.rows <= 256  # the per-row shifts cost O(rows·d³): attention layers of the tiny model
    if small:
        out["rowwise"] = lambda: relaxation_bound(p, shift="rowwise")
    if with_old:
        out["old-jacobi"] = lambda: old.relaxation_bound(p, shift="jacobi")
        if small:
            out["old-rowwise"] = lambda: old.relaxation_bound(p, shift="rowwise")
    return out


def run_model(model: str, path: Path, calib: Path, blocks: list[int], old_blocks: list[int], old) -> list[dict]:
    layers = real_layers(path, calib, blocks, nsamples=128, seqlen=256)
    recs = []
    for name, (W, G) in layers.items():
        block = int(name.split(".")[-3])
        p = LayerProblem(W, G.to(torch.float32), "per_row", 0.5, name=name)
        err = p.error(get_method("wanda").solve(p).mask)
        for var, fn in variants(p, block in old_blocks, old).items():
            lb, cpu, wall, info = timed(fn)
            rec = {"model": model, "layer": name, "shape": [p.rows, p.d], "bound": var, "lower_bound": lb,
                   "wanda_error": err, "gap": (err - lb) / err, "cpu_s": cpu, "wall_s": wall,
                   "shift_used": info.get("shift", "")}
            print(rec, flush=True)
            recs.append(rec)
    return recs


def table(recs: list[dict], meta: dict[str, Any]) -> str:
    lines = ["# Certified lower bounds: cost and gap on real layers", "",
             f"50% per-row, 128 × 256 calibration tokens; gap = (err − LB)/err against the Wanda mask; "
             f"torch threads = 1; load average {meta['load_before']} → {meta['load_after']} (shared 2-core machine).",
             f"Command: `{meta['command']}`", ""]
    for model in dict.fromkeys(r["model"] for r in recs):
        rs = [r for r in recs if r["model"] == model]
        names = list(dict.fromkeys(r["bound"] for r in rs))
        lines += [f"## {model}", "", "| bound | layers | CPU s / layer (mean) | CPU s total | mean gap | gap range |",
                  "|---|---|---|---|---|---|"]
        for v in names:
            g = [r for r in rs if r["bound"] == v]
            gaps = [r["gap"] for r in g]
            cpu = [r["cpu_s"] for r in g]
            lines.append(f"| {v} | {len(g)} | {sum(cpu) / len(g):.3f} | {sum(cpu):.1f} | {sum(gaps) / len(g):.4f} | "
                         f"{min(gaps):.4f} – {max(gaps):.4f} |")
        lines += ["", "| layer | shape | " + " | ".join(f"{v} gap (CPU s)" for v in names) + " |",
                  "|---|---|" + "---|" * len(names)]
        for layer in dict.fromkeys(r["layer"] for r in rs):
            cells = []
            for v in names:
                r = next((r for r in rs if r["layer"] == layer and r["bound"] == v), None)
                cells.append("—" if r is None else f"{r['gap']:.4f} ({r['cpu_s']:.2f})")
            shape = next(r["shape"] for r in rs if r["layer"] == layer)
            lines.append(f"| {layer} | {shape[0]}×{shape[1]} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny-blocks", default="0,1")
    ap.add_argument("--smol-blocks", default="0,1,15")
    ap.add_argument("--old-blocks", default="0", help="tiny blocks also bounded with the old implementation")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ints = lambda s: [int(x) for x in s.split(",") if x != ""]
    meta = {"load_before": os.getloadavg()[0], "command": "PYTHONPATH=. python " + " ".join(sys.argv),
            "torch": torch.__version__, "old_commit": OLD_COMMIT}
    old = old_bounds_module()
    recs = []
    if ints(args.tiny_blocks):
        recs += run_model("maskopt-tiny-llama", SHARED / "models" / "maskopt-tiny-llama",
                          SHARED / "data" / "english-calib" / "calib.txt", ints(args.tiny_blocks), ints(args.old_blocks), old)
    if ints(args.smol_blocks):
        recs += run_model("SmolLM2-135M", model_path("smollm"),
                          SHARED / "data" / "wikitext-2" / "valid.txt", ints(args.smol_blocks), [], old)
    meta["load_after"] = os.getloadavg()[0]
    RESULTS.mkdir(parents=True, exist_ok=True)
    save("certify_speed", {"meta": meta, "records": recs}, table(recs, meta))


if __name__ == "__main__":
    main()
