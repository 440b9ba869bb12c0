"""ALPS on SmolLM2-135M beside SparseGPT in the same run, on the scoreboard's protocol (issue 21).

Protocol (bench/smollm.py's): calibration 128 × 256 tokens of ../shared/data/wikitext-2/valid.txt (seed 0),
perplexity on the first 32 windows of 512 tokens of ../shared/data/wikitext-2-raw/test.txt (dense 28.82). Model:
$MASKOPT_SMOLLM_F32 when it names the float32 copy, else the GGUF in ../shared. Masks only (no recovery), no
per-layer Wanda reference (so that the prune time is the method's: calibration forwards + layer solves).
Every (method, setting) runs in its own interpreter, one at a time, and is appended to
bench/results/alps_smollm.jsonl as it finishes (rows already there are skipped); bench/results/alps_smollm.md is
rebuilt after each. Methods take options as 'alps:key=value,...'; 'NAME+refit' adds the least-squares refit,
'NAME+owl' the OWL allocation of the sparsity over the blocks (e.g. 'alps+owl:final=damped').

    .venv/bin/python bench/alps_smollm.py --threads 1 --settings 50%:unstructured 70%:unstructured --methods sparsegpt alps
    .venv/bin/python bench/alps_smollm.py --threads 1 --settings 2:4 60%:per_row --methods sparsegpt alps
    .venv/bin/python bench/alps_smollm.py --table
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, SHARED, model_path, run_child  # noqa: E402

CALIB = SHARED / "data" / "wikitext-2" / "valid.txt"
TEXT = SHARED / "data" / "wikitext-2-raw" / "test.txt"
NAME = "alps_smollm"
# the ALPS authors' code (mazumder-lab/ALPS alps.py, unchanged but for the device), same protocol, issue 21
INFO = ("iterations", "rho", "cg_iterations", "gram_cached", "admm_error", "swaps", "warm_refit_error")  # per layer
AUTHORS = {"50%:unstructured": (43.7, 0.0112, 1158), "70%:unstructured": (111.9, 0.0305, 1503)}


def child(a: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(a.threads)
    import maskopt
    from maskopt.config import PruneConfig
    from maskopt.data import eval_windows, read_texts, tokenize
    from maskopt.model.loading import load_model
    from maskopt.options import parse_kv
    from maskopt.perplexity import perplexity
    from maskopt.report import peak_memory_mb

    t0 = time.time()
    model, tok = load_model(model_path("smollm"), progress=False)
    windows = eval_windows(tokenize(tok, read_texts([str(TEXT)])), 512, a.eval_max_windows)
    row = {"method": a.method, "setting": a.setting, "threads": a.threads,
           "calibration": f"{a.nsamples}x{a.seqlen}", "eval_windows": int(windows.shape[0])}
    if a.method != "dense":
        if re.fullmatch(r"\d+:\d+", a.setting):  # N:M (its sparsity is 1 − N/M)
            sp, pattern = "50%", a.setting
        else:
            sp, _, pattern = a.setting.partition(":")
        name, _, opts = a.method.partition(":")
        flags = name.split("+")[1:]
        cfg = PruneConfig(method=name.split("+")[0], sparsity=float(sp.rstrip("%")) / 100,
                          pattern=pattern or "per_row", nsamples=a.nsamples, seqlen=a.seqlen, refit="refit" in flags,
                          allocation="owl" if "owl" in flags else "uniform",
                          method_options=parse_kv(opts.split(",") if opts else []), progress=False, reference=None)
        rep = maskopt.prune(model, [str(CALIB)], cfg, tokenizer=tok)
        row.update({"sparsity": rep.sparsity, "prune_seconds": rep.prune_seconds,
                    "solve_seconds": sum(r.seconds for r in rep.layers),
                    "mean_relative_error": rep.mean_relative_error(),
                    "layer_relative_errors": [r.relative_error for r in rep.layers],
                    "layer_info": [{k: v for k, v in r.info.items() if k in INFO} for r in rep.layers]})
    row["ppl"] = perplexity(model, windows, progress=False)
    row["seconds"] = time.time() - t0
    row["peak_memory_mb"] = peak_memory_mb()["cpu_rss"]
    print(json.dumps(row))


def table(rows: list[dict]) -> str:
    lines = ["| setting | method | ppl | mean rel. layer error | prune s | layer solves s | threads |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: (r["setting"], r["method"] != "dense", r["method"])):
        if r["method"] == "dense":
            lines.append(f"| – | dense | {r['ppl']:.2f} | – | – | – | {r['threads']} |")
            continue
        lines.append(f"| {r['setting']} | {r['method']} | {r['ppl']:.2f} | {r['mean_relative_error']:.4f} | "
                     f"{r['prune_seconds']:.0f} | {r['solve_seconds']:.0f} | {r['threads']} |")
    for s, (ppl, err, sec) in AUTHORS.items():
        lines.append(f"| {s} | ALPS authors' code (issue 21) | {ppl} | {err} | {sec} | – | 2 (loaded) |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--method", default="dense", help=argparse.SUPPRESS)
    ap.add_argument("--setting", default="–", help=argparse.SUPPRESS)
    ap.add_argument("--methods", nargs="+", default=["sparsegpt", "alps"])
    ap.add_argument("--settings", nargs="+", default=["50%:unstructured", "70%:unstructured", "50%:per_row",
                                                      "70%:per_row"])
    ap.add_argument("--dense", action="store_true", help="also the dense model's perplexity (a check of the protocol)")
    ap.add_argument("--nsamples", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=256)
    ap.add_argument("--eval-max-windows", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--name", default=NAME)
    ap.add_argument("--table", action="store_true")
    a = ap.parse_args()
    if a.child:
        return child(a)
    jsonl = RESULTS / f"{a.name}.jsonl"
    rows = [json.loads(x) for x in jsonl.read_text().splitlines() if x.strip()] if jsonl.exists() else []
    if not a.table:
        done = {(r["method"], r["setting"]) for r in rows}
        todo = ([("dense", "–")] if a.dense else []) + [(m, s) for s in a.settings for m in a.methods]
        common = ["--nsamples", str(a.nsamples), "--seqlen", str(a.seqlen), "--eval-max-windows",
                  str(a.eval_max_windows), "--threads", str(a.threads)]
        for method, setting in todo:
            if (method, setting) in done:
                continue
            try:
                row = run_child(__file__, ["--method", method, "--setting", setting, *common])
            except RuntimeError as e:
                print(f"FAILED {method} {setting}: {e}", file=sys.stderr)
                continue
            with jsonl.open("a") as f:
                f.write(json.dumps(row) + "\n")
            rows.append(row)
            done.add((method, setting))
            print(json.dumps({k: v for k, v in row.items() if k not in ("layer_relative_errors", "layer_info")}),
                  flush=True)
            (RESULTS / f"{a.name}.md").write_text(table(rows))
    (RESULTS / f"{a.name}.md").write_text(table(rows))
    print(table(rows))


if __name__ == "__main__":
    main()
