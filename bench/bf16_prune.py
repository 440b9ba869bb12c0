"""A bf16 checkpoint pruned with defaults: saved in bf16 (its size on disk = the input's), and its quality against the
same checkpoint pruned in float32. SmolLM2-135M is converted once to a bf16 safetensors folder (outside the repo);
both runs prune it with the same method, calibration windows (protocol v2) and threads, the first with the
defaults (`--dtype auto`: the model, its forward passes and the saved file in bf16; Grams and solves in float32 or
float64 inside a layer), the second with `--dtype float32`. Both outputs are scored by protocol v2 (in float32) on
the same windows, and their difference is a paired bootstrap over windows.

    .venv/bin/python bench/bf16_prune.py --method sparsegpt --threads 1
    .venv/bin/python bench/bf16_prune.py --table

Rows: bench/results/bf16_prune.jsonl (+ .md).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from common import RESULTS, ROOT, model_path, read_jsonl

ROWS = RESULTS / "bf16_prune.jsonl"
WORK = Path.home() / ".cache" / "maskopt" / "bf16-prune"


def bf16_copy() -> Path:
    """SmolLM2-135M as a bf16 safetensors folder (from the float32 copy or the GGUF)."""
    import torch  # noqa: PLC0415

    from maskopt.model.loading import load_model  # noqa: PLC0415

    out = WORK / "smollm2-135m-bf16"
    if (out / "config.json").is_file():
        return out
    model, tok = load_model(model_path("smollm"), dtype=torch.float32, progress=False)
    model.to(torch.bfloat16)
    model.config.dtype = "bfloat16"
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    tmp.replace(out)
    return out


def weights(folder: Path) -> tuple[int, set[str]]:
    """(bytes of the *.safetensors files, the dtypes of the tensors in them)."""
    from safetensors import safe_open  # noqa: PLC0415

    size, dtypes = 0, set()
    for f in sorted(folder.glob("model*.safetensors")):  # the model's shards (not maskopt_masks.safetensors)
        size += f.stat().st_size
        with safe_open(str(f), "pt") as sf:
            for k in sf.keys():
                dtypes.add(str(sf.get_slice(k).get_dtype()))
    return size, dtypes


def main() -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    from protocol import compare, write_splits  # noqa: PLC0415

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", default="sparsegpt")
    ap.add_argument("--sparsity", default="0.5")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--table", action="store_true")
    ap.add_argument("--seed-yardstick", action="store_true",
                    help="add a float32 run with calibration seed 1: the size of a difference that sampling alone makes")
    a = ap.parse_args()
    if a.table:
        return write_table()
    if a.seed_yardstick:
        return yardstick(a)
    WORK.mkdir(parents=True, exist_ok=True)
    src = bf16_copy()
    calib = write_splits()["calib"]
    row: dict = {"model": "smollm2-135m (bf16 copy)", "method": a.method, "sparsity": float(a.sparsity),
                 "threads": a.threads, "input_bytes": weights(src)[0]}
    scores = {}
    for tag, extra in (("auto", []), ("float32", ["--dtype", "float32"])):
        out = WORK / f"{a.method}-{a.sparsity}-{tag}"
        cmd = [sys.executable, "-m", "maskopt", "prune", str(src), "--method", a.method, "--sparsity", a.sparsity,
               "--calib", calib, "--nsamples", "128", "--seqlen", "256", "--no-eval", "-q", "--threads",
               str(a.threads), "--out", str(out), "--overwrite", *extra]
        t = time.time()
        subprocess.run(cmd, check=True, cwd=ROOT)
        size, dtypes = weights(out)
        sj = WORK / f"{a.method}-{a.sparsity}-{tag}.score.json"
        subprocess.run([sys.executable, str(ROOT / "bench" / "protocol.py"), "score", str(out), "--json", str(sj),
                        "--threads", str(a.threads), "--no-zeroshot"], check=True, cwd=ROOT)
        scores[tag] = json.loads(sj.read_text())
        row[tag] = {"command": " ".join(["maskopt", *cmd[3:]]), "prune_s": time.time() - t, "bytes": size,
                    "dtypes": sorted(dtypes),
                    **{k: {"ppl": scores[tag][k]["ppl"], "lo": scores[tag][k]["lo"], "hi": scores[tag][k]["hi"]}
                       for k in ("wikitext", "heldout", "tune")}}
    row["eval_tag"] = scores["auto"].get("eval_tag")
    row["paired_auto_minus_f32"] = {k: compare(scores["auto"], scores["float32"], k) for k in ("wikitext", "heldout")}
    with ROWS.open("a") as f:
        f.write(json.dumps(row) + "\n")
    write_table()


def yardstick(a: argparse.Namespace) -> None:
    """Prune in float32 with calibration seed 1 and compare with the seed-0 float32 run of the last row."""
    sys.path.insert(0, str(ROOT / "bench"))
    from protocol import compare, write_splits  # noqa: PLC0415

    rows = read_jsonl(ROWS)
    row = next(r for r in reversed(rows) if r["method"] == a.method and "auto" in r)
    out = WORK / f"{a.method}-{a.sparsity}-float32-seed1"
    cmd = [sys.executable, "-m", "maskopt", "prune", str(bf16_copy()), "--method", a.method, "--sparsity", a.sparsity,
           "--calib", write_splits()["calib"], "--nsamples", "128", "--seqlen", "256", "--seed", "1", "--no-eval",
           "-q", "--threads", str(a.threads), "--out", str(out), "--overwrite", "--dtype", "float32"]
    subprocess.run(cmd, check=True, cwd=ROOT)
    sj = WORK / f"{a.method}-{a.sparsity}-float32-seed1.score.json"
    subprocess.run([sys.executable, str(ROOT / "bench" / "protocol.py"), "score", str(out), "--json", str(sj),
                    "--threads", str(a.threads), "--no-zeroshot"], check=True, cwd=ROOT)
    base = json.loads((WORK / f"{a.method}-{a.sparsity}-float32.score.json").read_text())
    seed1 = json.loads(sj.read_text())
    row["paired_seed1_minus_seed0_f32"] = {k: compare(seed1, base, k) for k in ("wikitext", "heldout")}
    ROWS.write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_table()


def write_table() -> None:
    rows = read_jsonl(ROWS)
    out = ["# A bf16 checkpoint pruned in bf16 (defaults) vs in float32", "",
           "SmolLM2-135M converted to bf16; the same calibration windows (protocol v2); scores by protocol v2 in "
           "float32 (95% bootstrap intervals over windows; difference = paired bootstrap, bf16 − float32). "
           "Command: `.venv/bin/python bench/bf16_prune.py --method METHOD`.", "",
           "| method | sparsity | run | saved dtypes | size on disk (input) | WikiText ppl | english-heldout ppl | tuning ppl | prune+save s |",
           "|---|---:|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        for tag in ("auto", "float32"):
            x = r[tag]
            ci = " ".join(f"{x[k]['ppl']:.2f} [{x[k]['lo']:.2f}, {x[k]['hi']:.2f}] |" for k in ("wikitext", "heldout"))
            out.append(f"| {r['method']} | {r['sparsity']:.0%} | `--dtype {tag}` | {', '.join(x['dtypes'])} | "
                       f"{x['bytes'] / 1e6:.1f} MB ({r['input_bytes'] / 1e6:.1f} MB) | {ci} {x['tune']['ppl']:.2f} | "
                       f"{x['prune_s']:.0f} |")
    out += ["", "Paired differences (95% over windows). The yardstick row is what another calibration sample alone "
            "changes: the same float32 prune with `--seed 1` (`--seed-yardstick`).", "",
            "| method | sparsity | difference | WikiText | english-heldout |", "|---|---:|---|---:|---:|"]
    for r in rows:
        for key, what in (("paired_auto_minus_f32", "bf16 − float32"),
                          ("paired_seed1_minus_seed0_f32", "yardstick: float32 seed 1 − seed 0")):
            if key not in r:
                continue
            p = r[key]
            cells = " | ".join(f"{p[k]['diff']:+.2f} [{p[k]['diff_lo']:+.2f}, {p[k]['diff_hi']:+.2f}]"
                               for k in ("wikitext", "heldout"))
            out.append(f"| {r['method']} | {r['sparsity']:.0%} | {what} | {cells} |")
    RESULTS.joinpath("bf16_prune.md").write_text("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
