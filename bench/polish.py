"""Polish a model pruned by another tool: its zeros as the warm start of SparseSwaps (+ refit), every row keeping
its count; scored before and after with protocol v2 (same windows, paired bootstrap of the difference).

    .venv/bin/python bench/polish.py --peer ~/.cache/maskopt/peer-models/llmc-sparsegpt-50% --name llmc-sparsegpt-50%

Rows: bench/results/polish_smollm.jsonl (+ .md). The peer folder comes from bench/peers/run.py (llm-compressor run
in its own environment on the protocol's calibration token ids).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from common import RESULTS, ROOT, model_path, read_jsonl

ROWS = RESULTS / "polish_smollm.jsonl"


def score(folder: Path, out: Path, threads: int, zeroshot_limit: int | None) -> dict:
    cmd = [sys.executable, str(ROOT / "bench" / "protocol.py"), "score", str(folder), "--json", str(out), "--threads",
           str(threads)] + (["--zeroshot-limit", str(zeroshot_limit)] if zeroshot_limit else ["--no-zeroshot"])
    subprocess.run(cmd, check=True, cwd=ROOT)
    return json.loads(out.read_text())


def main() -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    from protocol import compare, write_splits  # noqa: PLC0415

    ap = argparse.ArgumentParser()
    ap.add_argument("--peer", type=Path, required=not {"--table", "--versus"} & set(sys.argv), help="the pruned folder of the other tool")
    ap.add_argument("--name", required=not {"--table", "--versus"} & set(sys.argv))
    ap.add_argument("--method", default="sparseswaps")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--zeroshot-limit", type=int, default=None)
    ap.add_argument("--work", type=Path, default=Path.home() / ".cache" / "maskopt" / "polish")
    ap.add_argument("--table", action="store_true", help="rebuild polish_smollm.md from the rows")
    ap.add_argument("--versus", action="store_true",
                    help="add to the rows the paired difference to maskopt's SparseGPT 50% row of the v2 scoreboard")
    a = ap.parse_args()
    if a.table:
        return write_table()
    if a.versus:
        rows = read_jsonl(ROWS)
        for r in rows:
            r["paired_vs_sparsegpt"] = versus_sparsegpt(json.loads((a.work / f"{r['peer']}-after.json").read_text()))
        ROWS.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return write_table()
    out = a.work / f"{a.name}-polished"
    a.work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    cmd = [sys.executable, "-m", "maskopt", "prune", str(a.peer), "--dense", str(model_path("smollm")), "--method",
           a.method, "--opt", "warm_start=existing", "--refit", "--calib", write_splits()["calib"], "--nsamples",
           "128", "--seqlen", "256", "--no-eval", "-q", "--threads", str(a.threads), "--out", str(out), "--overwrite"]
    subprocess.run(cmd, check=True, cwd=ROOT)
    seconds = time.time() - t0
    before = score(a.peer, a.work / f"{a.name}-before.json", a.threads, a.zeroshot_limit)
    after = score(out, a.work / f"{a.name}-after.json", a.threads, a.zeroshot_limit)
    report = json.loads((out / "maskopt_report.json").read_text())
    layers = report["layers"]
    row = {"peer": a.name, "method": a.method, "polish_s": seconds,
           "layer_error_before": sum(r["info"]["warm_error"] for r in layers),
           "layer_error_after": sum(r["error"] for r in layers),
           "sparsity": report["sparsity"],
           "before": {k: before[k]["ppl"] for k in ("wikitext", "heldout", "tune") if k in before},
           "after": {k: after[k]["ppl"] for k in ("wikitext", "heldout", "tune") if k in after},
           "paired": {k: compare(after, before, k) for k in ("wikitext", "heldout") if k in before and k in after},
           "paired_vs_sparsegpt": versus_sparsegpt(after)}
    with open(ROWS, "a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row, indent=2))
    write_table()


def versus_sparsegpt(after: dict) -> dict | None:
    """Paired difference (polished − maskopt's SparseGPT 50%, the v2 scoreboard row) on the same windows."""
    from protocol import compare  # noqa: PLC0415

    rows = [r for r in read_jsonl(RESULTS / "smollm_v2.jsonl") if r["method"] == "sparsegpt" and r["setting"] == "50%"
            and r.get("recover", "none") == "none" and not r.get("refit")]
    return {k: compare(after, rows[-1], k) for k in ("wikitext", "heldout")} if rows else None


def write_table() -> None:
    rows = read_jsonl(ROWS)
    out = ["# Polishing another tool's pruned model (SmolLM2-135M, protocol v2)", "",
           "The peer's output (its own code, the protocol's calibration token ids: `bench/peers/run.py`) is the warm "
           "start: `maskopt prune PEER --dense DENSE --method sparseswaps --opt warm_start=existing --refit` keeps "
           "every row's count and changes which weights are kept, then refits them. Perplexity by protocol v2 "
           "(WikiText 128 windows, english-heldout 128 windows; paired 95% interval of after − before). Layer error: "
           "Σ over the 210 layers of ‖W X − Ŵ X‖² on the polish run's own calibration stream — before = the peer's "
           "mask with the dense kept weights (the warm start), after = the polished mask and refit weights. "
           "Command: `.venv/bin/python bench/polish.py --peer FOLDER --name NAME`.", "",
           "| peer | WikiText before → after | Δ (paired 95%) | english-heldout before → after | Δ (paired 95%) | tuning before → after | layer error before → after | sparsity | polish s |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        b, a, p = r["before"], r["after"], r["paired"]
        d = {k: f"{p[k]['diff']:+.2f} [{p[k]['diff_lo']:+.2f}, {p[k]['diff_hi']:+.2f}]" for k in p}
        out.append(f"| {r['peer']} | {b['wikitext']:.2f} → {a['wikitext']:.2f} | {d['wikitext']} | "
                   f"{b['heldout']:.2f} → {a['heldout']:.2f} | {d['heldout']} | {b['tune']:.2f} → {a['tune']:.2f} | "
                   f"{r['layer_error_before']:.4g} → {r['layer_error_after']:.4g} | {r['sparsity']:.4f} | "
                   f"{r['polish_s']:.0f} |")
    out += ["", "Polished − maskopt's SparseGPT 50% (the v2 scoreboard row, same windows, paired 95%):", "",
            "| peer | WikiText | english-heldout |", "|---|---:|---:|"]
    for r in rows:
        v = r.get("paired_vs_sparsegpt")
        if v:
            out.append(f"| {r['peer']} | " + " | ".join(
                f"{v[k]['diff']:+.2f} [{v[k]['diff_lo']:+.2f}, {v[k]['diff_hi']:+.2f}]" for k in ("wikitext", "heldout")) + " |")
    (RESULTS / "polish_smollm.md").write_text("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
