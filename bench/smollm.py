"""The SmolLM2-135M scoreboard: masks alone, then each with recovery; perplexity, layer error, time, memory.

Protocol (issue 12): calibration 128 × 256 tokens of WikiText-2 `valid.txt` (seed 0); perplexity on WikiText-2
raw `test.txt`, windows of 512 tokens, the first `--eval-max-windows` of them (32 by default ≈ the first 16 k
tokens, the protocol of ../shared/README's dense 28.8). Every row runs in its own interpreter (honest peak
memory) and is appended to `bench/results/smollm.jsonl` as soon as it finishes; rows already there are
skipped, so the grid can be stopped and restarted. `--table` rebuilds `bench/results/smollm.md` from it.
The model is the GGUF in ../shared, or a float32 folder converted from it (same weights, loads faster) when
$MASKOPT_SMOLLM_F32 names one (this project's runs used one).

Masks are cached: a mask row saves its pruned model under $MASKOPT_BENCH_MASKS (default
~/.cache/maskopt/bench-masks), and a recovery row of the same mask starts from that folder instead of pruning
again (its "prune s" is then the cached run's; its peak memory is the recovery run's own).

    .venv/bin/python bench/smollm.py --settings 50% 70% --methods wanda sparsegpt
    .venv/bin/python bench/smollm.py --settings 50% --methods wanda sparsegpt "sparseswaps:warm_start=sparsefw" \
        --recover none matrix subblock block full masklora:steps=100
    .venv/bin/python bench/smollm.py --table
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

from common import RESULTS, ROOT, SETTINGS, SHARED, model_path, run_child

CALIB = SHARED / "data" / "wikitext-2" / "valid.txt"
TEXT = SHARED / "data" / "wikitext-2-raw" / "test.txt"
NAME = "smollm"  # results: bench/results/<name>.jsonl and .md (--name)
MASKS = ["magnitude", "wanda", "ria", "sparsegpt", "dsnot", "sparsefw", "sparseswaps",
         "sparseswaps:warm_start=sparsefw"]
PEERS = {("sparsegpt", "50%"): 51.2, ("sparsegpt", "70%"): 199, ("sparsegpt", "2:4"): 82.2, ("wanda", "50%"): 62.7}




def row_key(r: dict) -> tuple:
    return (r["model"], r["method"], r["setting"], r["recover"], r.get("allocation", "uniform"), r.get("refit", False))


def mask_cache(a: argparse.Namespace) -> Path:
    """Folder of the pruned model of this row's mask (same model, method, setting, allocation, refit, data)."""
    root = Path(os.environ.get("MASKOPT_BENCH_MASKS", Path.home() / ".cache" / "maskopt" / "bench-masks"))
    key = f"{a.model}-{a.method}-{a.setting}-{a.allocation}-refit{a.refit[0]}-{a.nsamples}x{a.seqlen}"
    return root / re.sub(r"[^A-Za-z0-9._=-]+", "_", key)


def child(a: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(a.threads)
    from maskopt.config import PruneConfig
    from maskopt.jobs import JobInputs, run_job
    from maskopt.options import parse_kv
    from maskopt.perplexity import EvaluateOptions, EvaluateStage
    from maskopt.pipeline import PruneStage
    from maskopt.stages import make_stage

    from maskopt.io import MASKS_FILE
    from maskopt.report import load_report, peak_memory_mb
    from maskopt.save import SaveOptions, SaveStage

    t0 = time.time()
    a.recover = a.recover[0]
    recover = [make_stage(r, "recover") for r in a.recover.split("+") if r != "none"]
    evaluate = EvaluateStage(EvaluateOptions([str(TEXT)], "ppl", 512, a.eval_max_windows, cache=a.method == "dense"))
    cache = mask_cache(a)
    inputs = JobInputs(model_path(a.model), [str(CALIB)], a.nsamples, a.seqlen, progress=False)
    report, out, cached = None, None, False
    if a.method == "dense":
        stages = [evaluate]
    elif recover and (cache / MASKS_FILE).is_file():  # the mask was made by an earlier row: recover from it
        stages, cached = [*recover, evaluate], True
        inputs.model, inputs.dense, report = cache, model_path(a.model), load_report(cache)
        print(f"mask from {cache}", file=sys.stderr)
    else:
        pattern, sparsity = SETTINGS[a.setting]
        name, _, opts = a.method.partition(":")
        cfg = PruneConfig(method=name, sparsity=sparsity, pattern=pattern, nsamples=a.nsamples, seqlen=a.seqlen,
                          method_options=parse_kv(opts.split(",") if opts else []), progress=False,
                          reference=None if a.no_reference else "wanda", allocation=a.allocation,
                          refit=a.refit == ["yes"])
        stages, out = [PruneStage(cfg), SaveStage(SaveOptions(overwrite=True)), *recover, evaluate], cache
        cache.parent.mkdir(parents=True, exist_ok=True)
    rep = run_job(stages, inputs, out=out, report=report, log=lambda m: print(m, file=sys.stderr))
    row = {"model": a.model, "method": a.method, "setting": a.setting, "recover": a.recover,
           "allocation": a.allocation, "refit": a.refit == ["yes"], "ppl": next(iter(rep.perplexity.values()))["ppl"],
           "mean_relative_error": rep.mean_relative_error() if rep.layers else 0.0,
           "mean_wanda_relative_error": rep.mean_reference_relative_error(),
           "layer_relative_errors": [r.relative_error for r in rep.layers],
           "sparsity": rep.sparsity, "prune_seconds": rep.prune_seconds,
           "recovery_seconds": {k: v.get("seconds") for k, v in rep.recovery.items()},
           "seconds": time.time() - t0, "peak_memory_mb": peak_memory_mb()["cpu_rss"], "mask_cached": cached,
           "threads": a.threads, "eval_windows": a.eval_max_windows, "calibration": f"{a.nsamples}x{a.seqlen}"}
    print(json.dumps(row))


def mask_label(r: dict) -> str:
    return r["method"] + (" (OWL)" if r.get("allocation") == "owl" else "") + (" + refit" if r.get("refit") else "")


def recovery_seconds(r: dict) -> float:
    return sum(v or 0 for v in (r.get("recovery_seconds") or {}).values())


def table(rows: list[dict]) -> str:
    dense = {r["model"]: r["ppl"] for r in rows if r["method"] == "dense"}
    lines = ["| model | setting | mask | recovery | ppl | ppl / dense | peer (llm-compressor) | mean rel. layer error | "
             "vs Wanda | prune s | recovery s | peak MB | threads |", "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    order = {m: i for i, m in enumerate(["dense", *MASKS])}
    for r in sorted(rows, key=lambda r: (r["model"], r["setting"], order.get(r["method"], 99), r["method"],
                                         r["recover"])):
        d = dense.get(r["model"])
        plain = r["recover"] == "none" and not r.get("refit") and r.get("allocation", "uniform") == "uniform"
        peer = PEERS.get((r["method"], r["setting"])) if plain and r["model"] == "smollm" else None
        w = r.get("mean_wanda_relative_error")
        rel = r["mean_relative_error"] / w if w else None
        setting = r["setting"] if r["method"] != "dense" else "–"
        cells = [r["model"], setting, mask_label(r), r["recover"], f"{r['ppl']:.2f}", f"{r['ppl'] / d:.3f}" if d else "–",
                 str(peer) if peer else "–", f"{r['mean_relative_error']:.4f}", f"{rel:.3f}" if rel else "–",
                 f"{r['prune_seconds']:.0f}" + ("*" if r.get("mask_cached") else ""), f"{recovery_seconds(r):.0f}",
                 f"{r['peak_memory_mb']:.0f}", str(r.get("threads", 2))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def recovery_table(rows: list[dict], setting: str = "50%") -> str:
    """Perplexity after each recovery (rows) of each mask (columns) at one setting; cell: ppl (recovery s, peak GB)."""
    rows = [r for r in rows if r["setting"] == setting and r.get("allocation", "uniform") == "uniform"]
    masks = list(dict.fromkeys(mask_label(r) for r in rows if r["recover"] != "none"))
    cell = {(mask_label(r), r["recover"]): r for r in rows if mask_label(r) in masks}
    recs = sorted({rec for _, rec in cell}, key=lambda x: (x != "none", x))
    lines = [f"| recovery at {setting} | " + " | ".join(masks) + " |", "|---|" + "---:|" * len(masks)]
    for rec in recs:
        out = []
        for m in masks:
            r = cell.get((m, rec))
            out.append("–" if r is None else f"{r['ppl']:.2f}" if rec == "none" else
                       f"{r['ppl']:.2f} ({recovery_seconds(r):.0f} s, {r['peak_memory_mb'] / 1024:.1f} GB)")
        lines.append(f"| {rec} | " + " | ".join(out) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", default="smollm", choices=["smollm", "tiny"])
    ap.add_argument("--methods", nargs="+", default=MASKS)
    ap.add_argument("--method", default="dense", help=argparse.SUPPRESS)
    ap.add_argument("--settings", nargs="+", default=["50%", "60%", "70%", "2:4"])
    ap.add_argument("--setting", default="50%", help=argparse.SUPPRESS)
    ap.add_argument("--recover", nargs="+", default=["none"],
                    help="recovery per row: 'none', a --recover spec, or several joined by '+'")
    ap.add_argument("--allocation", default="uniform", choices=["uniform", "owl"])
    ap.add_argument("--refit", nargs="+", default=["no"], choices=["no", "yes"],
                    help="least-squares refit of every layer after its mask (a row dimension: no, yes or both)")
    ap.add_argument("--name", default=NAME, help="results file name under bench/results/")
    ap.add_argument("--nsamples", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=256)
    ap.add_argument("--eval-max-windows", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-reference", action="store_true", help="skip the per-layer Wanda reference (faster)")
    ap.add_argument("--table", action="store_true", help="only rebuild bench/results/smollm.md")
    a = ap.parse_args()
    if a.child:
        return child(a)
    RESULTS.mkdir(parents=True, exist_ok=True)
    jsonl = RESULTS / f"{a.name}.jsonl"
    rows = [json.loads(ln) for ln in jsonl.read_text().splitlines() if ln.strip()] if jsonl.exists() else []
    if not a.table:
        done = {row_key(r) for r in rows}
        common = ["--model", a.model, "--nsamples", str(a.nsamples), "--seqlen", str(a.seqlen), "--eval-max-windows",
                  str(a.eval_max_windows), "--threads", str(a.threads), "--allocation", a.allocation]
        common += ["--no-reference"] if a.no_reference else []
        todo = [("dense", "–", "none", "no")] + [(m, s, r, f) for s in a.settings for m in a.methods
                                                 for f in a.refit for r in a.recover]
        for method, setting, rec, refit in todo:
            key = (a.model, method, setting, rec, a.allocation if method != "dense" else "uniform", refit == "yes")
            if key in done or (method == "dense" and any(k[:2] == (a.model, "dense") for k in done)):
                continue
            args = ["--method", method, "--setting", setting if setting != "–" else "50%", "--recover", rec,
                    "--refit", refit, *common]
            try:
                row = run_child(__file__, args)
            except RuntimeError as e:  # a failed row is reported, the grid goes on
                print(f"FAILED {method} {setting} {rec}: {e}", file=sys.stderr)
                continue
            if method == "dense":
                row["setting"] = "–"
            with jsonl.open("a") as f:
                f.write(json.dumps(row) + "\n")
            rows.append(row)
            done.add(row_key(row))
            print(json.dumps({k: v for k, v in row.items() if k != "layer_relative_errors"}), flush=True)
    md = table(rows)
    (RESULTS / f"{a.name}.md").write_text(
        f"Scoreboard (`bench/smollm.py`): calibration 128 × 256 WikiText-2 valid, perplexity on "
        f"WikiText-2 raw test, windows of 512 (first {a.eval_max_windows}). CPU, 2 cores shared with other jobs: "
        f"times are pessimistic. Peak MB is the row's own process; * = mask loaded from the cache of an earlier "
        f"row (prune s is that row's).\n\n" + md + "\nRecovery of the same masks (perplexity; recovery time and the "
        f"row's peak memory):\n\n" + recovery_table(rows))
    print(md)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
