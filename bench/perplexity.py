"""Perplexity of the whole pruned tiny Llama for every method, with wall time and peak memory.

    .venv/bin/python bench/perplexity.py [--iterations 2000] [--step agnostic] [--nsamples 32] [--seqlen 256] [--max-windows 64] \
        [--out bench/results/perplexity.json]

Every (method, setting) runs in its own subprocess (fresh model, so peak RSS is per method) through
the public pipeline: maskopt.prune(model, calib.txt, PruneConfig(...)) with the same calibration
windows for every method, then perplexity on the first --max-windows 512-token windows of ../shared/data/english-heldout/test.txt.
Settings: 50/60/70 % per-row and 2:4.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from common import ROOT, SHARED
MODEL = SHARED / "models" / "maskopt-tiny-llama"
CALIB = SHARED / "data" / "english-calib" / "calib.txt"
TEST = SHARED / "data" / "english-heldout" / "test.txt"
SETTINGS = [("per_row", 0.5), ("per_row", 0.6), ("per_row", 0.7), ("2:4", 0.5)]


def methods(iterations: int, step: str) -> dict[str, tuple[str, dict]]:
    fw = {"iterations": iterations, "step": step}
    return {
        "wanda": ("wanda", {}),
        "sparsegpt": ("sparsegpt", {}),
        "ria": ("ria", {}),
        "dsnot": ("dsnot", {}),
        "sparsefw": ("sparsefw", fw),
        "sparseswaps(wanda)": ("sparseswaps", {}),
        "sparseswaps(sparsefw)": ("sparseswaps", {"warm_start": "sparsefw", "warm_options": fw}),
        "sparseswaps(sparsefw)+refit": ("sparseswaps", {"warm_start": "sparsefw", "warm_options": fw, "refit": True}),
    }


def one(method: str, options: dict, pattern: str, sparsity: float, nsamples: int, seqlen: int, threads: int,
        max_windows: int) -> dict:
    """Prune a fresh model with one method and evaluate it (runs inside the subprocess)."""
    import torch

    sys.path.insert(0, str(ROOT))
    torch.set_num_threads(threads)
    import maskopt
    from maskopt.model.loading import load_model
    model, tok = load_model(MODEL)
    cfg = maskopt.PruneConfig(method=method, sparsity=sparsity, pattern=pattern, method_options=options,
                              nsamples=nsamples, seqlen=seqlen, reference=None, progress=False, device="cpu")
    t = time.time()
    rep = maskopt.prune(model, str(CALIB), cfg, tokenizer=tok)
    prune_s = time.time() - t
    ppl = maskopt.evaluate(model, tok, [str(TEST)], progress=False, max_windows=max_windows or None)
    import resource

    return {"ppl": next(iter(ppl.values())), "prune_seconds": prune_s,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "mean_relative_error": sum(r.relative_error for r in rep.layers) / len(rep.layers),
            "sparsity": rep.sparsity}


def dense_ppl(max_windows: int) -> float:
    sys.path.insert(0, str(ROOT))
    import maskopt
    from maskopt.model.loading import load_model

    model, tok = load_model(MODEL)
    return next(iter(maskopt.evaluate(model, tok, [str(TEST)], progress=False, max_windows=max_windows or None).values()))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=2000)
    ap.add_argument("--step", default="agnostic")
    ap.add_argument("--nsamples", type=int, default=32)
    ap.add_argument("--seqlen", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-windows", type=int, default=64, help="512-token test windows (0 = all)")
    ap.add_argument("--methods", nargs="*", default=None)
    ap.add_argument("--settings", nargs="*", default=[f"{p}@{s}" for p, s in SETTINGS])
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "perplexity.json"))
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: JSON job for a subprocess
    a = ap.parse_args()
    if a.one:
        job = json.loads(a.one)
        print("RESULT " + json.dumps(one(**job)))
        return
    table = methods(a.iterations, a.step)
    names = a.methods or list(table)
    out: dict = {"args": vars(a), "dense": None, "results": {}}
    job = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(ROOT / 'bench')!r}); "
                          f"import perplexity as p; print('RESULT', p.dense_ppl({a.max_windows}))"], capture_output=True, text=True)
    out["dense"] = float(job.stdout.split("RESULT")[-1]) if "RESULT" in job.stdout else job.stderr[-500:]
    print(f"dense perplexity: {out['dense']}")
    for spec in a.settings:
        pat, sp = spec.split("@")
        print(f"\n### {spec}\n| method | ppl | prune s | peak RSS MB | mean layer rel. err |\n|---|---|---|---|---|")
        for n in names:
            method, opts = table[n]
            payload = json.dumps({"method": method, "options": opts, "pattern": pat, "sparsity": float(sp),
                                  "nsamples": a.nsamples, "seqlen": a.seqlen, "threads": a.threads,
                                  "max_windows": a.max_windows})
            job = subprocess.run([sys.executable, __file__, "--one", payload], capture_output=True, text=True)
            if "RESULT " not in job.stdout:
                r = {"error": job.stderr[-800:]}
                print(f"| {n} | FAILED | | | |\n{r['error']}")
            else:
                r = json.loads(job.stdout.split("RESULT ", 1)[1])
                print(f"| {n} | {r['ppl']:.3f} | {r['prune_seconds']:.1f} | {r['peak_rss_mb']:.0f} | "
                      f"{r['mean_relative_error']:.4f} |")
            sys.stdout.flush()
            out["results"].setdefault(spec, {})[n] = r
            Path(a.out).parent.mkdir(parents=True, exist_ok=True)
            Path(a.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
