"""Baselines on the real model(s): dense, magnitude, Wanda, SparseGPT, RIA at 50/60/70% per row and 2:4.

Perplexity on the held-out text (windows of 512), mean relative per-layer error, wall time, peak memory.
Calibration: 128 windows × 256 tokens of english-calib, seed 0 (the issue's anchor protocol).

    .venv/bin/python bench/baselines.py --model tiny
    .venv/bin/python bench/baselines.py --model smollm --settings 50% 2:4 --eval-max-windows 32
    .venv/bin/python bench/baselines.py --methods "sparseswaps:max_iter=10,refit=true"   # method options
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from common import CALIB, MODELS, SETTINGS, TEXTS, run_child, save

METHODS = ["magnitude", "wanda", "sparsegpt", "ria"]
# HISTORICAL, typed in by hand from an llm-compressor run of issue 3 that no script records (tiny model, heldout
# perplexity, 128×256 calibration, windows of 512). Kept so that the old table can be rebuilt; not re-measured.
# Peers are now run by scripts: bench/peers/ (protocol v2, SmolLM2), never typed in.
HISTORICAL_ANCHOR = {"dense": 114.9, ("sparsegpt", "50%"): 117.8, ("sparsegpt", "70%"): 130.9, ("sparsegpt", "2:4"): 120.6,
          ("wanda", "50%"): 121.5, ("wanda", "70%"): 156.9, ("magnitude", "50%"): 121.2,
          ("magnitude", "70%"): 159.2, ("magnitude", "2:4"): 133.2}


def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    import maskopt
    from maskopt.perplexity import evaluate_texts
    from maskopt.model.loading import load_model
    from maskopt.report import peak_memory_mb

    model, tok = load_model(MODELS[args.model])
    res: dict = {"method": args.method, "setting": args.setting}
    t = time.time()
    if args.method != "dense":
        pattern, sparsity = SETTINGS[args.setting]
        name, _, opts = args.method.partition(":")  # e.g. "sparseswaps:max_iter=10,refit=true"
        options = dict(kv.split("=", 1) for kv in opts.split(",") if kv)
        cfg = maskopt.PruneConfig(method=name, sparsity=sparsity, pattern=pattern, nsamples=args.nsamples,
                                  seqlen=args.seqlen, progress=False, reference=None, method_options=options)
        rep = maskopt.prune(model, [str(CALIB)], cfg, tokenizer=tok)
        res.update(prune_seconds=rep.prune_seconds, sparsity=rep.sparsity,
                   mean_relative_error=rep.mean_relative_error())
    ppl = evaluate_texts(model, tok, [TEXTS[t] for t in args.texts], seqlen=args.eval_seqlen,
                         max_windows=args.eval_max_windows, progress=False)
    res["ppl"] = {t: ppl[k] for t, k in zip(args.texts, ppl)}
    res["seconds"] = time.time() - t
    res["peak_memory_mb"] = peak_memory_mb()["cpu_rss"]
    print(json.dumps(res))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", default="tiny", choices=list(MODELS))
    ap.add_argument("--methods", nargs="+", default=METHODS)
    ap.add_argument("--method", default="dense", help=argparse.SUPPRESS)
    ap.add_argument("--settings", nargs="+", default=["50%", "60%", "70%", "2:4"])
    ap.add_argument("--setting", default="50%", help=argparse.SUPPRESS)
    ap.add_argument("--texts", nargs="+", default=["heldout"], choices=list(TEXTS))
    ap.add_argument("--nsamples", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=256)
    ap.add_argument("--eval-seqlen", type=int, default=512)
    ap.add_argument("--eval-max-windows", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tag", default="", help="suffix of the result file name")
    ap.add_argument("--historical-anchor", action="store_true",
                    help="show issue 3's typed-in llm-compressor values (not re-measured; peers: bench/peers/)")
    args = ap.parse_args()
    if args.child:
        return child(args)
    common = ["--model", args.model, "--texts", *args.texts, "--nsamples", str(args.nsamples), "--seqlen",
              str(args.seqlen), "--eval-seqlen", str(args.eval_seqlen), "--threads", str(args.threads)]
    if args.eval_max_windows:
        common += ["--eval-max-windows", str(args.eval_max_windows)]
    runs = [run_child(__file__, ["--method", "dense", *common])]
    print(json.dumps(runs[-1]), file=sys.stderr)
    for setting in args.settings:
        for method in args.methods:
            runs.append(run_child(__file__, ["--method", method, "--setting", setting, *common]))
            print(json.dumps(runs[-1]), file=sys.stderr)
    text = args.texts[0]
    anchor = args.model == "tiny" and text == "heldout" and not args.eval_max_windows and args.historical_anchor
    lines = [f"Model `{args.model}`, calibration {args.nsamples}×{args.seqlen} english-calib, perplexity on {text} "
             f"(windows of {args.eval_seqlen}{', first ' + str(args.eval_max_windows) if args.eval_max_windows else ''}).", "",
             "| method | setting | ppl | ppl / dense | anchor ppl / dense (typed, historical) | mean rel. layer error | prune s | peak MB |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    dense = runs[0]["ppl"][text]
    for r in runs:
        key = "dense" if r["method"] == "dense" else (r["method"], r["setting"])
        a = HISTORICAL_ANCHOR.get(key) if anchor else None
        a_ratio = f"{a / HISTORICAL_ANCHOR['dense']:.3f} ({a})" if a else "–"
        lines.append(f"| {r['method']} | {r['setting'] if r['method'] != 'dense' else '–'} | {r['ppl'][text]:.2f} | "
                     f"{r['ppl'][text] / dense:.3f} | {a_ratio} | {r.get('mean_relative_error', 0):.4f} | "
                     f"{r.get('prune_seconds', 0):.1f} | {r['peak_memory_mb']:.0f} |")
    save(f"baselines-{args.model}{'-' + args.tag if args.tag else ''}", {"args": vars(args), "runs": runs}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
