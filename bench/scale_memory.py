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

from common import RESULTS, ROOT, SHARED, model_path

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
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.time() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{model} {method}: {p.stderr[-2000:]}")
    rss_kb = int(next(ln for ln in p.stderr.splitlines() if "Maximum resident set size" in ln).split()[-1])
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
            "threads": threads, "peak_rss_mb": rss_kb / 1024, "wall_s": wall, "prune_s": report["prune_seconds"],
            "solve_s_per_block": sum(blocks.values()) / max(len(blocks), 1),
            "checkpoint_gb": sum(f.stat().st_size for f in path.glob("*.safetensors")) / 2**30,
            "output": str(out)}


def bit_identical(a: Path, b: Path) -> bool:
    import torch

    from maskopt.model.loading import load_model

    sa, sb = load_model(a)[0].state_dict(), load_model(b)[0].state_dict()
    same = sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    return same and (a / "maskopt_masks.safetensors").read_bytes() == (b / "maskopt_masks.safetensors").read_bytes()


def table() -> None:
    rows = [json.loads(x) for x in ROWS.read_text().splitlines() if x.strip()]
    lines = ["| model | method | mode | hidden × blocks | checkpoint GB | peak RSS MB | prune s | solve s / block | calibration |",
             "|---|---|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        if r.get("kind") == "identity":
            continue
        lines.append(f"| {r['model']} | {r['method']} | {'streamed' if r['stream'] else 'in memory'} | "
                     f"{r['hidden']} × {r['blocks']} | {r['checkpoint_gb']:.2f} | {r['peak_rss_mb']:.0f} | "
                     f"{r['prune_s']:.0f} | {r['solve_s_per_block']:.1f} | {r['nsamples']} × {r['seqlen']} |")
    for r in rows:
        if r.get("kind") == "identity":
            lines.append(f"\n{r['model']} {r['method']}: streamed = in memory, bit for bit: **{r['identical']}**")
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
    a = ap.parse_args()
    if a.table:
        return table()
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
