"""Prune time in one run (issue 21's target: maskopt's best pipeline ≤ the ALPS authors' time and ≤ 4× SparseGPT).

Every entry prunes SmolLM2-135M (the float32 copy, $MASKOPT_SMOLLM_F32) on the protocol-v2 calibration windows in a
fresh process, one after the other, nothing else scored: maskopt's SparseGPT, maskopt's pipelines given by
--pipelines, and the ALPS authors' `alps.py` (bench/peers/alps_prune.py, --alps-src). The whole sequence is run
``--rounds`` times in alternating order (A B C, then C B A, ...) so that a drift of the machine's load falls on
every entry alike. Recorded per run: the prune seconds the tool itself reports (maskopt: the prune stage, from the
first block's calibration to the last layer; the authors' driver: the same span), the process's wall and CPU
seconds, and the load average before and after. Rows are appended to bench/results/prune_timing.jsonl as they
finish; --table writes prune_timing.md (median per entry, ratio to SparseGPT and to the authors' ALPS of the same
round).

    export MASKOPT_SMOLLM_F32=~/.cache/maskopt/smollm2-135m-f32
    .venv/bin/python bench/prune_timing.py --setting 50% --alps-src ~/.cache/maskopt/alps-src --rounds 1 --threads 1
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
sys.path.insert(0, str(HERE))

from common import RESULTS, ROOT, model_path, read_jsonl, write_md  # noqa: E402

JSONL = RESULTS / "prune_timing.jsonl"
SETTINGS = {"50%": (0.5, "per_row", None), "60%": (0.6, "per_row", None), "70%": (0.7, "per_row", None),
            "2:4": (0.5, "2:4", (2, 4))}
# name → PruneConfig fields beyond method/sparsity/pattern (the scoreboard's best rows of each setting)
PIPELINES = {
    "sparsegpt": {"method": "sparsegpt"},
    "alps": {"method": "alps"},
    "alps+match": {"method": "alps", "match": "dense", "match_strength": 0.25},
    "alps+owl+match": {"method": "alps", "allocation": "owl", "match": "dense", "match_strength": 0.25},
}


def child(a: argparse.Namespace) -> None:
    """One maskopt prune (no save, no scoring); prints the row."""
    import torch

    torch.set_num_threads(a.threads)
    from protocol import write_splits  # noqa: PLC0415

    from maskopt.config import PruneConfig
    from maskopt.run.job import JobInputs, run_job
    from maskopt.stages.prune import PruneStage

    sparsity, pattern, _ = SETTINGS[a.setting]
    fields = dict(PIPELINES[a.pipeline])
    cfg = PruneConfig(sparsity=sparsity, pattern=pattern, nsamples=128, seqlen=256, progress=False, reference=None,
                      **fields)
    inputs = JobInputs(model_path(a.model), [write_splits()["calib"]], 128, 256, progress=False)
    rep = run_job([PruneStage(cfg)], inputs, out=None, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(json.dumps({"prune_seconds": rep.prune_seconds, "sparsity": rep.sparsity,
                      "mean_relative_error": rep.mean_relative_error()}))


def run_entry(entry: str, a: argparse.Namespace, windows: Path) -> dict:
    load0 = os.getloadavg()[0]
    t = time.time()
    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryDirectory(prefix="maskopt-timing-") as tmp:
        if entry == "authors-alps":
            _, _, nm = SETTINGS[a.setting]
            cmd = [sys.executable, str(HERE / "peers" / "alps_prune.py"), "--alps-src", str(a.alps_src),
                   "--model", str(model_path(a.model)), "--windows", str(windows),
                   "--sparsity", str(SETTINGS[a.setting][0]), "--nm", "0:0" if nm is None else f"{nm[0]}:{nm[1]}",
                   "--out", str(Path(tmp) / "out"), "--threads", str(a.threads)]
            subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
            run = json.loads((Path(tmp) / "out" / "peer_run.json").read_text())
            res = {"prune_seconds": run["prune_seconds"], "pattern": run["pattern"]}
        else:
            cmd = [sys.executable, __file__, "--child", "--pipeline", entry, "--setting", a.setting,
                   "--threads", str(a.threads), "--model", a.model]
            out = subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.PIPE, text=True)
            res = json.loads(out.stdout.strip().splitlines()[-1])
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"model": a.model, "entry": entry, "setting": a.setting, "threads": a.threads, **res, "wall_seconds": time.time() - t,
            "cpu_seconds": (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime),
            "load_before": load0, "load_after": os.getloadavg()[0], "nproc": os.cpu_count(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S")}


def write_table() -> str:
    import statistics  # noqa: PLC0415

    rows = read_jsonl(JSONL)
    out = ["Prune time in one run (`bench/prune_timing.py`): SmolLM2-135M, protocol-v2 calibration (128 × 256), "
           "each entry a fresh process, run one after the other (alternating order per round); prune s = the span "
           "the tool reports (calibration walk + solves), median over rounds; CPU s = the process's user + system "
           "time. Same machine, same session; load = 1-minute load average before → after.", "",
           "| run | setting | threads | entry | rounds | prune s (median) | CPU s | × SparseGPT | × authors' ALPS | "
           "mean rel. error | load |", "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    for run_id in sorted({r["run"] for r in rows}):
        rs = [r for r in rows if r["run"] == run_id]
        med = {e: statistics.median(r["prune_seconds"] for r in rs if r["entry"] == e)
               for e in dict.fromkeys(r["entry"] for r in rs)}
        for e, s in med.items():
            sel = [r for r in rs if r["entry"] == e]
            cpu = statistics.median(r["cpu_seconds"] for r in sel)
            err = sel[0].get("mean_relative_error")
            load = f"{min(r['load_before'] for r in sel):.1f}–{max(r['load_after'] for r in sel):.1f}"
            ratio = lambda ref: f"{s / med[ref]:.2f}" if ref in med else "–"  # noqa: E731
            out.append(f"| {run_id} | {sel[0]['setting']} | {sel[0]['threads']} | {e} | {len(sel)} | {s:.0f} | "
                       f"{cpu:.0f} | {ratio('sparsegpt')} | {ratio('authors-alps')} | "
                       f"{'–' if err is None else f'{err:.4f}'} | {load} |")
    return write_md("prune_timing", out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--pipeline", default="sparsegpt", help=argparse.SUPPRESS)
    ap.add_argument("--setting", default="50%", choices=list(SETTINGS))
    ap.add_argument("--pipelines", nargs="+", default=["alps+match"], choices=[p for p in PIPELINES if p != "sparsegpt"])
    ap.add_argument("--alps-src", default=None, help="folder of a mazumder-lab/ALPS checkout (omit: no authors' row)")
    ap.add_argument("--model", default="smollm", choices=["smollm", "tiny"], help="tiny: a quick check of the script")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--table", action="store_true")
    a = ap.parse_args()
    if a.child:
        return child(a)
    if a.table:
        print(write_table())
        return
    entries = ["sparsegpt", *a.pipelines] + (["authors-alps"] if a.alps_src else [])
    windows = None
    if a.alps_src:
        from protocol import CALIB_NSAMPLES, CALIB_SEED, CALIB_SEQLEN, cache_root, export_windows  # noqa: PLC0415

        model = model_path(a.model)
        windows = cache_root() / f"calib-{Path(model).name}-{CALIB_NSAMPLES}x{CALIB_SEQLEN}-seed{CALIB_SEED}.npy"
        if not windows.is_file():
            export_windows(windows, model)
    run_id = time.strftime("%Y%m%d-%H%M") + ("" if a.model == "smollm" else f"-{a.model}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    for k in range(a.rounds):
        for entry in (entries if k % 2 == 0 else entries[::-1]):
            row = {"run": run_id, "round": k, **run_entry(entry, a, windows)}
            with JSONL.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
    print(write_table())


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
