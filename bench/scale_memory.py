"""Peak memory and time per block of a streamed prune (`maskopt prune --stream`), from 135 M to ~3 B parameters.

Random-weight Llama checkpoints are built from real configurations (SmolLM2-360M, Llama-3.2-1B, Llama-3.2-3B; bf16,
written once to $MASKOPT_SCALE_CACHE, default ~/.cache/maskopt/scale, never to the repository), then pruned in a
fresh process per row (peak RSS from the kernel's accounting of that process) with `--stream`, calibration from
the first 90% of WikiText-2 valid. Random weights give meaningless masks but the real shapes, so the memory and
time are those of the real models. SmolLM2-135M (real weights) is also pruned in memory and streamed, to show that
streaming changes no weight or mask (bit for bit).

    .venv/bin/python bench/scale_memory.py --models smollm2-360m llama-1b llama-3b --methods wanda sparsegpt
    .venv/bin/python bench/scale_memory.py --table        # bench/results/scale_memory.{md,png} from the rows
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from common import RESULTS, ROOT, SHARED, model_path, read_jsonl

ROWS = RESULTS / "scale_memory.jsonl"
CACHE = Path(os.environ.get("MASKOPT_SCALE_CACHE") or Path.home() / ".cache" / "maskopt" / "scale")
CONFIGS = {  # the published shapes (vocabulary, width, depth, MLP, heads) of each model
    "smollm2-360m": dict(vocab_size=49152, hidden_size=960, intermediate_size=2560, num_hidden_layers=32,
                         num_attention_heads=15, num_key_value_heads=5, tie_word_embeddings=True),
    "llama-1b": dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                     num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=True),
    "llama-3b": dict(vocab_size=128256, hidden_size=3072, intermediate_size=8192, num_hidden_layers=28,
                     num_attention_heads=24, num_key_value_heads=8, tie_word_embeddings=True),
}


def build(name: str) -> Path:
    """A random-weight bf16 checkpoint of ``name`` (tensor by tensor: never the whole model in memory)."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoTokenizer, LlamaConfig

    from maskopt.model.streaming import empty_model

    out = CACHE / name
    if (out / "model.safetensors.index.json").is_file():
        return out
    tmp = CACHE / f".{name}.tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    cfg = LlamaConfig(max_position_embeddings=2048, **CONFIGS[name])
    model = empty_model(cfg, torch.bfloat16)
    g = torch.Generator().manual_seed(0)
    shard, size, n, weight_map = {}, 0, 0, {}

    def flush():
        nonlocal shard, size, n
        if shard:
            n += 1
            fname = f"model-{n:05d}.safetensors"
            save_file(shard, str(tmp / fname), metadata={"format": "pt"})
            weight_map.update({k: fname for k in shard})
            shard, size = {}, 0

    for k, p in model.state_dict().items():
        if cfg.tie_word_embeddings and k == "lm_head.weight":
            continue
        t = (torch.randn(p.shape, generator=g) * 0.02).to(torch.bfloat16) if "norm" not in k else torch.ones(p.shape, dtype=torch.bfloat16)
        shard[k] = t
        size += t.numel() * 2
        if size > 1 << 30:
            flush()
    flush()
    (tmp / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    cfg.dtype = "bfloat16"
    cfg.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(str(model_path("smollm"))).save_pretrained(tmp)  # any tokenizer: ids < 49152
    tmp.rename(out)
    return out


def calibration() -> Path:
    """The first 90% of WikiText-2 valid (the calibration split of the scoreboard protocol)."""
    out = CACHE / "wikitext2-valid-first90.txt"
    if not out.is_file():
        text = (SHARED / "data" / "wikitext-2" / "valid.txt").read_text()
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text[: int(0.9 * len(text))])
    return out


def run(model: str, path: Path, method: str, stream: bool, nsamples: int, seqlen: int, threads: int) -> dict:
    out = CACHE / "outs" / f"{model}-{method}-{'stream' if stream else 'memory'}"
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "maskopt", "prune", str(path), "--method", method, "--calib",
           str(calibration()), "--nsamples", str(nsamples), "--seqlen", str(seqlen), "--no-eval", "-q", "--threads",
           str(threads), "--out", str(out), "--overwrite", "--no-resume", *(["--stream"] if stream else [])]
    code = _code()  # the version that runs (HEAD may move while it does)
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.time() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{model} {method}: {p.stderr[-2000:]}")
    rss_mb = peak_rss_mb(p.stderr)
    report = json.loads((out / "maskopt_report.json").read_text())
    blocks: dict[int, float] = {}
    for rec in report["layers"]:
        i = int(rec["name"].split(".")[2])
        blocks[i] = blocks.get(i, 0.0) + rec["seconds"]
    import torch  # noqa: F401  (the config of the row)
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(str(path))
    return {"model": model, "method": method, "stream": stream, "hidden": cfg.hidden_size,
            "blocks": cfg.num_hidden_layers, "mlp": cfg.intermediate_size, "nsamples": nsamples, "seqlen": seqlen,
            "threads": threads, "peak_rss_mb": rss_mb, "wall_s": wall, "prune_s": report["prune_seconds"],
            "solve_s_per_block": sum(blocks.values()) / max(len(blocks), 1),
            "checkpoint_gb": sum(f.stat().st_size for f in path.glob("*.safetensors")) / 2**30,
            "output": str(out), "code": code}


def _code() -> str:
    p = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    return p.stdout.strip() or "?"


def bit_identical(a: Path, b: Path) -> bool:
    import torch

    from maskopt.model.loading import load_model

    sa, sb = load_model(a)[0].state_dict(), load_model(b)[0].state_dict()
    same = sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    return same and (a / "maskopt_masks.safetensors").read_bytes() == (b / "maskopt_masks.safetensors").read_bytes()


PROJECT = {  # the shapes a user prunes next: (hidden, MLP, blocks, KV heads × head dim)
    "Llama-2-7B": (4096, 11008, 32, 4096),
    "Llama-3.1-70B": (8192, 28672, 80, 1024),
}
GPU_FLOPS = 50e12  # assumption: sustained float32 matmul rate of one H100 (67 TFLOP/s peak, TF32 off)


def block_flops(hidden: int, mlp: int, kv: int, tokens: int) -> dict:
    """FLOPs of one decoder block of a sequential prune: two forward passes over the calibration tokens (collect,
    then propagate the pruned outputs), the Grams (2·T·d² per distinct input: attention input, o_proj input, MLP
    input, down_proj input) and a SparseGPT-type solve (d³ factorization + rows·d² update per Linear)."""
    shapes = [(hidden, hidden), (kv, hidden), (kv, hidden), (hidden, hidden), (mlp, hidden), (mlp, hidden), (hidden, mlp)]
    params = sum(o * i for o, i in shapes)
    return {"forward": 2 * 2 * tokens * params, "gram": 2 * tokens * (3 * hidden**2 + mlp**2),
            "solve": sum(i**3 + 2 * o * i**2 for o, i in shapes)}


def cpu_flops() -> float:
    """float32 matmul FLOP/s of one thread here (median of 5 products of 2048²)."""
    import torch

    torch.set_num_threads(1)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    ts = []
    for _ in range(5):
        t = time.perf_counter()
        a @ b
        ts.append(time.perf_counter() - t)
    return 2 * 2048**3 / sorted(ts)[2]


def floor_rss_mb() -> float:
    """Peak RSS of an interpreter that only imports what a prune imports (torch, transformers, maskopt)."""
    p = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-c", "import torch, transformers, maskopt.cli, "
                        "maskopt.run.job, maskopt.model.streaming"], capture_output=True, text=True, cwd=ROOT)
    return peak_rss_mb(p.stderr)


def peak_rss_mb(time_v_stderr: str) -> float:
    """The peak RSS (MB) that `/usr/bin/time -v` reports."""
    return int(next(ln for ln in time_v_stderr.splitlines() if "Maximum resident set size" in ln).split()[-1]) / 1024


def block_budget_mb(r: dict) -> float:
    """One block in float32 + its Grams (float64) + the calibration activations (input and output of the block)."""
    h, m = r["hidden"], r["mlp"]
    kv = r.get("kv", _kv(r["model"]))
    params = 2 * h * h + 2 * kv * h + 3 * h * m
    return (4 * params + 8 * (3 * h * h + m * m) + 2 * 4 * r["nsamples"] * r["seqlen"] * h) / 2**20


def _kv(model: str) -> int:
    if model == "smollm2-135m":
        return 192
    c = CONFIGS[model]
    return c["num_key_value_heads"] * c["hidden_size"] // c["num_attention_heads"]


def projection(rows: list[dict]) -> list[str]:
    """Per-block seconds of 7 B / 70 B, from the FLOP rates this machine reached in the measured rows."""
    flops_rows = [r for r in rows if r.get("kind") == "cpu_flops"]
    runs = [r for r in rows if "peak_rss_mb" in r and r.get("stream")]
    if not flops_rows or not runs:
        return []
    core = flops_rows[-1]["flops"]
    big = max(runs, key=lambda r: r["checkpoint_gb"])  # the rate of the walk (forward + Grams + I/O) from the largest
    fb = block_flops(big["hidden"], big["mlp"], _kv(big["model"]), big["nsamples"] * big["seqlen"])
    walk_s = (big["prune_s"] - big["solve_s_per_block"] * big["blocks"]) / big["blocks"]
    walk_rate = (fb["forward"] + fb["gram"]) / walk_s
    sg = [r for r in runs if r["method"] == "sparsegpt"]
    solver = max(sg, key=lambda r: r["checkpoint_gb"]) if sg else None
    solve_rate = block_flops(solver["hidden"], solver["mlp"], _kv(solver["model"]), 0)["solve"] / \
        solver["solve_s_per_block"] if solver else None
    out = ["", "## Projection to 7 B and 70 B (SparseGPT, 128 × 2048 calibration tokens)", "",
           f"Rates measured here: the walk (two forward passes + Grams + block I/O) of {big['model']} ran at "
           f"{walk_rate / 1e9:.1f} GFLOP/s, the SparseGPT solve of {solver['model'] if solver else '—'} at "
           f"{(solve_rate or 0) / 1e9:.1f} GFLOP/s; one core's float32 matmul peak here {core / 1e9:.1f} GFLOP/s. "
           f"**Assumption**: one H100 sustains {GPU_FLOPS / 1e12:.0f} TFLOP/s on both (float32, TF32 off), i.e. "
           f"{GPU_FLOPS / core:.0f}× one core here; I/O, Python and launch overheads are not modelled on the GPU, so "
           "the GPU column is a lower bound. Caveats: the walk ran in the checkpoint's bf16, which this CPU's AMX "
           "units run faster than its float32 peak (hence a walk rate above it); the solve rate comes from the small "
           "matrices of a 360M model, where SparseGPT's column loop is least efficient, so the CPU solve column is "
           "pessimistic. The projection is an order of magnitude, not a measurement.", "",
           "| model | blocks | walk s / block (here, 1 core) | solve s / block (here, 1 core) | whole prune here | whole prune, one H100 (assumed rate) | dominant stage |",
           "|---|---:|---:|---:|---:|---:|---|"]
    for name, (h, m, n, kv) in PROJECT.items():
        f = block_flops(h, m, kv, 128 * 2048)
        walk, solve = (f["forward"] + f["gram"]) / walk_rate, f["solve"] / (solve_rate or walk_rate)
        gpu = n * (f["forward"] + f["gram"] + f["solve"]) / GPU_FLOPS
        dom = "walk (forward + Grams)" if walk > solve else "solve"
        out.append(f"| {name} | {n} | {walk:.0f} | {solve:.0f} | {n * (walk + solve) / 3600:.1f} h | "
                   f"{gpu / 60:.1f} min | {dom} ({max(walk, solve) / (walk + solve):.0%}) |")
    return out


def table() -> None:
    rows = read_jsonl(ROWS)
    lines = ["# Streamed pruning: peak memory and time per block", "",
             "Random-weight checkpoints with the published shapes (bf16), real SmolLM2-135M; one thread; peak RSS of "
             "the whole process (/usr/bin/time); *budget* = one block in float32 + its Grams in float64 + the "
             "calibration activations (the issue's target: peak ≤ 1.5 × budget). Rows with an older code version "
             "are kept (see `code`). Command: `.venv/bin/python bench/scale_memory.py --models ... --methods ...`; "
             "table and plot: `--table`.", "",
             "| model | method | mode | hidden × blocks | checkpoint GB | peak RSS MB | budget MB | peak / budget | (peak − floor) / budget | prune s | solve s / block | walk s / block | calibration | code |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    floors = [r["floor_rss_mb"] for r in rows if r.get("kind") == "cpu_flops"]
    floor = floors[-1] if floors else 0.0
    for r in rows:
        if "peak_rss_mb" not in r:
            continue
        b = block_budget_mb(r)
        walk = (r["prune_s"] - r["solve_s_per_block"] * r["blocks"]) / r["blocks"]
        lines.append(f"| {r['model']} | {r['method']} | {'streamed' if r['stream'] else 'in memory'} | "
                     f"{r['hidden']} × {r['blocks']} | {r['checkpoint_gb']:.2f} | {r['peak_rss_mb']:.0f} | {b:.0f} | "
                     f"{r['peak_rss_mb'] / b:.2f} | {(r['peak_rss_mb'] - floor) / b:.2f} | {r['prune_s']:.0f} | {r['solve_s_per_block']:.1f} | {walk:.1f} | "
                     f"{r['nsamples']} × {r['seqlen']} | {r.get('code', 'before 862c0b7')} |")
    for r in rows:
        if r.get("kind") == "identity":
            lines.append(f"\n{r['model']} {r['method']}: streamed = in memory, bit for bit: **{r['identical']}**")
    lines += [f"\nfloor = {floor:.0f} MB: the peak RSS of an interpreter that only imports torch, transformers and "
              "maskopt (`--cpu-flops` measures it)."] if floors else []
    lines += projection(rows)
    (RESULTS / "scale_memory.md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    for method in sorted({r["method"] for r in rows if "peak_rss_mb" in r}):
        rs = sorted((r for r in rows if r.get("method") == method and r.get("stream")), key=lambda r: r["checkpoint_gb"])
        ax[0].plot([r["checkpoint_gb"] for r in rs], [r["peak_rss_mb"] / 1024 for r in rs], "o-", label=method)
        ax[1].plot([r["hidden"] for r in rs], [r["solve_s_per_block"] for r in rs], "o-", label=method)
    ax[0].set_xlabel("checkpoint size (GB, bf16)"), ax[0].set_ylabel("peak RSS (GB), streamed")
    ax[1].set_xlabel("hidden size"), ax[1].set_ylabel("solve seconds per block")
    for a in ax:
        a.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "scale_memory.png", dpi=120)
    print((RESULTS / "scale_memory.md").read_text())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="*", default=[])
    ap.add_argument("--methods", nargs="*", default=["wanda", "sparsegpt"])
    ap.add_argument("--nsamples", type=int, default=32)
    ap.add_argument("--seqlen", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--identity", action="store_true", help="SmolLM2-135M: streamed vs in memory, bit for bit")
    ap.add_argument("--table", action="store_true")
    ap.add_argument("--cpu-flops", action="store_true", help="append this machine's one-thread matmul rate")
    a = ap.parse_args()
    if a.table:
        return table()
    if a.cpu_flops:
        return _append({"kind": "cpu_flops", "flops": cpu_flops(), "threads": 1, "floor_rss_mb": floor_rss_mb()})
    if a.identity:
        path = model_path("smollm")
        for method in a.methods:
            rows = [run("smollm2-135m", path, method, s, a.nsamples, a.seqlen, a.threads) for s in (False, True)]
            for r in rows:
                _append(r)
            _append({"kind": "identity", "model": "smollm2-135m", "method": method,
                     "identical": bit_identical(Path(rows[0]["output"]), Path(rows[1]["output"]))})
    for name in a.models:
        path = build(name)
        for method in a.methods:
            _append(run(name, path, method, True, a.nsamples, a.seqlen, a.threads))


def _append(row: dict) -> None:
    with open(ROWS, "a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
