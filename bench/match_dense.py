"""Choosing how layers match the dense model (issue 21): `PruneConfig.match='dense'` and its knobs, on the tuning
text of protocol v2 only (`bench/protocol.py`: the last 10% of WikiText-2 valid, never sampled).

Each row prunes SmolLM2-135M on the protocol's calibration windows (128 × 256, seed 0) with one method and one set
of PruneConfig fields, scores the tuning text (all its windows of 512, bootstrap interval and per-window NLLs), and
is appended to bench/results/match_dense.jsonl; `--table` writes match_dense.md with the paired difference of
every row to the row of the same method and sparsity with match='pruned'.

    export MASKOPT_SMOLLM_F32=~/.cache/maskopt/smollm2-135m-f32
    .venv/bin/python bench/match_dense.py --method sparsegpt --sparsity 0.5 --set match=dense match_strength=0.5
    .venv/bin/python bench/match_dense.py --method sparsegpt --sparsity 0.5 --set match=dense \
        'match_layers=["re:.*(o_proj|down_proj)"]'
    .venv/bin/python bench/match_dense.py --table
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from common import RESULTS, ROOT, model_path, read_jsonl

JSONL = RESULTS / "match_dense.jsonl"


def run(a: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(a.threads)
    from protocol import EvalConfig, protocol_stage, write_splits  # noqa: PLC0415

    from maskopt.config import PruneConfig
    from maskopt.options import parse_kv
    from maskopt.report import peak_memory_mb
    from maskopt.run.job import JobInputs, run_job
    from maskopt.stages.prune import PruneStage

    fields = {k: _value(v) for k, v in (s.split("=", 1) for s in a.set)}
    cfg = PruneConfig(method=a.method, sparsity=a.sparsity, pattern=a.pattern, nsamples=128, seqlen=256,
                      method_options=parse_kv(a.opt), progress=False, reference=None, **fields)
    inputs = JobInputs(model_path("smollm"), [write_splits()["calib"]], 128, 256, progress=False)
    t0 = time.time()
    score = protocol_stage(EvalConfig(wikitext_windows=-1, heldout_windows=-1, zeroshot=False))
    rep = run_job([PruneStage(cfg), score], inputs, out=None, log=lambda m: print(m, file=sys.stderr, flush=True))
    scores = score.result
    return {"method": a.method, "opt": a.opt, "sparsity": a.sparsity, "pattern": a.pattern, "fields": fields,
            "tune": scores["tune"], "prune_seconds": rep.prune_seconds, "seconds": time.time() - t0,
            "mean_relative_error": rep.mean_relative_error(),
            "mean_match_shift": (sum(r.info.get("match_shift", 0.0) for r in rep.layers) / max(1, len(rep.layers))),
            "peak_memory_mb": peak_memory_mb()["cpu_rss"], "threads": a.threads,
            "calib_sha256": write_splits()["calib_sha256"],
            "effective": {"match": cfg.match, "match_strength": cfg.match_strength, "match_damp": cfg.match_damp}}


def _value(v: str):
    """A PruneConfig field from the command line: JSON (numbers, lists, true/false) or else the string itself."""
    try:
        return json.loads(v)
    except json.JSONDecodeError:
        return v


def label(r: dict) -> str:
    fields = dict(r["fields"])
    if fields.get("match") == "dense" and "match_strength" not in fields:
        fields["match_strength"] = r.get("effective", {}).get("match_strength", "1 (then the default)")
    f = ", ".join(f"{k}={json.dumps(v) if isinstance(v, (list, dict)) else v}" for k, v in sorted(fields.items()))
    return r["method"] + (":" + ",".join(r["opt"]) if r["opt"] else "") + (f" ({f})" if f else "")


def scoreboard_bases() -> list[dict]:
    """The scoreboard's rows (bench/results/smollm_v2.jsonl, scored on the same tuning windows) in this file's row
    shape, as match='pruned' references where this file has none."""
    from common import SETTINGS  # noqa: PLC0415

    path = RESULTS / "smollm_v2.jsonl"
    out = []
    for r in read_jsonl(path) if path.exists() else []:
        if "tune" not in r or r["method"] in ("dense",) or r["method"].startswith("peer:") or r["recover"] != "none":
            continue
        name, _, opts = r["method"].partition(":")
        pattern, sparsity = SETTINGS[r["setting"]]
        fields = {**({"allocation": r["allocation"]} if r.get("allocation", "uniform") != "uniform" else {}),
                  **({"refit": True} if r.get("refit") else {})}
        if r.get("match", "pruned") == "pruned":
            out.append({"method": name, "opt": opts.split(",") if opts else [], "sparsity": sparsity, "pattern": pattern,
                        "fields": fields, "tune": r["tune"], "prune_seconds": r.get("prune_seconds") or 0,
                        "mean_match_shift": 0.0, "from": "smollm_v2"})
    return out


def _base_key(r: dict) -> tuple:
    f = {k: v for k, v in r["fields"].items() if not k.startswith("match")}
    return (r["method"], tuple(r["opt"]), r["sparsity"], r["pattern"], json.dumps(f, sort_keys=True))


def table(rows: list[dict]) -> str:
    from protocol import compare  # noqa: PLC0415

    out = ["| sparsity | pattern | method (PruneConfig fields) | tuning ppl [95%] | Δ vs match=pruned (paired 95%) | "
           "mean match shift | prune s |", "|---:|---|---|---:|---:|---:|---:|"]
    bases = {_base_key(b): b for b in scoreboard_bases()}
    bases.update({_base_key(b): b for b in rows if b["fields"].get("match", "pruned") == "pruned"})
    rows = rows + [b for b in bases.values() if b.get("from") and not any(_base_key(r) == _base_key(b) and
                                                                        r["fields"].get("match", "pruned") == "pruned"
                                                                        for r in rows)]
    for r in sorted(rows, key=lambda r: (r["sparsity"], r["pattern"], r["method"], label(r))):
        base = bases.get(_base_key(r))
        d = "–"
        if base is not None and base is not r:
            c = compare(r, base, "tune")
            d = f"{c['diff']:+.2f} [{c['diff_lo']:+.2f}, {c['diff_hi']:+.2f}]"
        t = r["tune"]
        src = " (scoreboard row)" if r.get("from") else ""
        out.append(f"| {r['sparsity']:.0%} | {r['pattern']} | {label(r)}{src} | {t['ppl']:.2f} [{t['lo']:.2f}, {t['hi']:.2f}] "
                   f"| {d} | {r['mean_match_shift']:.3f} | {r['prune_seconds']:.0f} |")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", default="sparsegpt")
    ap.add_argument("--opt", nargs="*", default=[], help="method options KEY=VALUE")
    ap.add_argument("--sparsity", type=float, default=0.5)
    ap.add_argument("--pattern", default="per_row")
    ap.add_argument("--set", nargs="*", default=[], help="PruneConfig fields KEY=VALUE (JSON for lists)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--table", action="store_true")
    a = ap.parse_args()
    if not a.table:
        row = run(a)
        RESULTS.mkdir(parents=True, exist_ok=True)
        with JSONL.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"{label(row)}: tuning ppl {row['tune']['ppl']:.2f}", flush=True)
    md = table(read_jsonl(JSONL))
    (RESULTS / "match_dense.md").write_text(
        "Tuning text only (protocol v2), SmolLM2-135M, calibration 128 × 256. Made by `bench/match_dense.py` "
        "(see its docstring). Prune times ran beside other jobs on the 2 cores: not timings. The row of α = 1 on every "
        "layer (SparseGPT 50%: tuning ppl 561.10, the full dense match over-corrects) was made by `bench/smollm.py "
        "--name tuning_v2 --tune-only --match dense` before α existed: see tuning_v2.md.\n\n" + md)
    print(md)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
