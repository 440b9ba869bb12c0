"""Benchmark (not a test): `maskopt certify` on whole pruned models — mean certified gaps and wall time.

Each row runs the command line in its own process (`maskopt certify PRUNED -o FILE ...`, loading, the calibration
walk and every layer's bounds included), reads the certificates it wrote and appends one row to
bench/results/certify_model.jsonl: mean gap over layers (mask problem: (err(M) − LB)/err(M); shipped weights
against the refit bound), gaps by layer kind, wall and CPU seconds, load average.

    .venv/bin/python bench/certify_model.py --name tiny-ss50 --pruned /tmp/cert/tiny-ss50 [--shift opt] [--time-budget S] [-- extra certify args]
    .venv/bin/python bench/certify_model.py --table
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from common import RESULTS, ROOT  # noqa: E402

JSONL = RESULTS / "certify_model.jsonl"


def run(name: str, pruned: str, shift: str, budget: float, threads: int, extra: list[str]) -> dict:
    out = Path(tempfile.mkdtemp()) / "certificates.json"
    cmd = [str(ROOT / ".venv" / "bin" / "maskopt"), "certify", pruned, "-o", str(out), "--shift", shift,
           "--threads", str(threads), "-q", *(["--time-budget", str(budget)] if budget > 0 else []), *extra]
    load0 = os.getloadavg()[0]
    t0 = time.time()
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.time() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} failed:\n{proc.stderr[-3000:]}")
    rows = json.loads(out.read_text())
    mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    kinds: dict[str, list[dict]] = {}
    for r in rows:
        kinds.setdefault(r["name"].split(".")[-1], []).append(r)
    rec = {
        "name": name, "pruned": pruned, "shift": shift, "time_budget": budget, "threads": threads, "extra": extra,
        "layers": len(rows), "mean_gap": mean([r["gap"] for r in rows]),
        "mean_refit_gap": mean([r["refit_gap"] for r in rows if "refit_gap" in r]),
        "total_gap": 1 - sum(r["lower_bound"] for r in rows) / sum(r["error"] for r in rows),
        "gap_by_kind": {k: mean([r["gap"] for r in v]) for k, v in kinds.items()},
        "refit_gap_by_kind": {k: mean([r["refit_gap"] for r in v if "refit_gap" in r]) for k, v in kinds.items()},
        "wall_s": wall, "cpu_s": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime),
        "bound_s": sum(r.get("time", 0.0) for r in rows), "load_before": load0, "load_after": os.getloadavg()[0],
        "command": " ".join(cmd[1:]).replace(str(out), "FILE"), "certificates": rows,
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    with JSONL.open("a") as f:
        f.write(json.dumps(rec) + "\n")
    return rec


def table() -> None:
    recs = [json.loads(line) for line in JSONL.read_text().splitlines() if line.strip()]
    pct = lambda x: "–" if x is None else f"{100 * x:.1f}%"  # noqa: E731
    lines = ["# maskopt certify on whole models", "",
             "Mean over layers of the certified gap (err − LB)/err of the mask (mask problem) and of the shipped weights "
             "against the refit bound; wall = the whole command (loading, calibration walk, bounds) on the shared 2-core "
             "machine (load average before → after). Command: `.venv/bin/python bench/certify_model.py ...`; table: `--table`.", "",
             "| run | shift | budget s | threads | layers | mean gap (mask) | mean gap (shipped vs refit) | wall s | CPU s | load | commit |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in recs:
        lines.append(f"| {r['name']} | {r['shift']} | {r['time_budget']:g} | {r['threads']} | {r['layers']} | "
                     f"{pct(r['mean_gap'])} | {pct(r['mean_refit_gap'])} | {r['wall_s']:.0f} | {r['cpu_s']:.0f} | "
                     f"{r['load_before']:.1f} → {r['load_after']:.1f} | {r.get('commit', '')} |")
    kinds = list(dict.fromkeys(k for r in recs for k in r["gap_by_kind"]))
    lines += ["", "Mean gap by layer kind (mask / shipped):", "",
              "| run | shift | budget s | " + " | ".join(kinds) + " |", "|---|---|---:|" + "---:|" * len(kinds)]
    for r in recs:
        lines.append(f"| {r['name']} | {r['shift']} | {r['time_budget']:g} | " + " | ".join(
            f"{pct(r['gap_by_kind'].get(k))} / {pct(r['refit_gap_by_kind'].get(k))}" for k in kinds) + " |")
    (RESULTS / "certify_model.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", default="")
    ap.add_argument("--pruned", default="")
    ap.add_argument("--shift", default="opt")
    ap.add_argument("--time-budget", type=float, default=0.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--table", action="store_true")
    ap.add_argument("extra", nargs="*", help="further maskopt certify arguments (after --)")
    args = ap.parse_args()
    if args.table:
        table()
        return
    rec = run(args.name, args.pruned, args.shift, args.time_budget, args.threads, args.extra)
    print(json.dumps({k: v for k, v in rec.items() if k != "certificates"}, indent=1))


if __name__ == "__main__":
    main()
