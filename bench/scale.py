"""Speed and scale (issue 11): wall time and peak memory of every method on one machine, in one run.

Runs the scoreboard grid of bench/smollm.py (same protocol: 128 × 256 WikiText-2 valid calibration, WikiText-2 raw
test perplexity on the first 32 windows of 512) for Wanda, SparseGPT, SparseFW, SparseSwaps (from Wanda and from
SparseFW), each without and with least-squares refit, at 50% per row and 2:4, into
bench/results/scale-<model>.jsonl, then tabulates the prune time of each as a multiple of SparseGPT's (same
refit setting, same run) — the targets are SparseSwaps ≤ 3× and SparseFW ≤ 5× SparseGPT on SmolLM2 at 50%.

    .venv/bin/python bench/scale.py --model smollm
    .venv/bin/python bench/scale.py --model tiny
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
METHODS = ["wanda", "sparsegpt", "sparsefw", "sparseswaps", "sparseswaps:warm_start=sparsefw"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm", choices=["smollm", "tiny"])
    ap.add_argument("--settings", nargs="+", default=["50%", "2:4"])
    ap.add_argument("--methods", nargs="+", default=METHODS)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--table", action="store_true", help="only rebuild the table")
    a = ap.parse_args()
    name = f"scale-{a.model}"
    if not a.table:
        subprocess.run([sys.executable, str(HERE / "smollm.py"), "--model", a.model, "--name", name, "--settings",
                        *a.settings, "--methods", *a.methods, "--refit", "no", "yes", "--threads", str(a.threads),
                        "--no-reference"], check=True)
    rows = [json.loads(ln) for ln in (HERE / "results" / f"{name}.jsonl").read_text().splitlines() if ln.strip()]
    base = {(r["setting"], r.get("refit", False)): r["prune_seconds"] for r in rows if r["method"] == "sparsegpt"}
    lines = [f"Model `{a.model}`; prune time as a multiple of SparseGPT's in the same run (same refit setting).", "",
             "| setting | method | refit | prune s | × SparseGPT | mean rel. layer error | ppl | peak MB |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: (r["setting"], r.get("refit", False), METHODS.index(r["method"])
                                          if r["method"] in METHODS else -1)):
        if r["method"] == "dense":
            continue
        b = base.get((r["setting"], r.get("refit", False)))
        ratio = f"{r['prune_seconds'] / b:.2f}" if b else "–"
        lines.append(f"| {r['setting']} | {r['method']} | {'yes' if r.get('refit') else 'no'} | "
                     f"{r['prune_seconds']:.1f} | {ratio} | {r['mean_relative_error']:.4f} | {r['ppl']:.2f} | "
                     f"{r['peak_memory_mb']:.0f} |")
    dense = [r for r in rows if r["method"] == "dense"]
    if dense:
        lines.append(f"\ndense perplexity {dense[0]['ppl']:.2f}")
    text = "\n".join(lines) + "\n"
    (HERE / "results" / f"{name}-table.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
