"""Storage, speed and quality of the sparse formats (issue: ship the pruned model).

    .venv/bin/python bench/storage.py [--models tiny smollm] [--parts storage speed quality] [--threads 1]
        [--quality-models tiny] [--quality-methods wanda sparseswaps] [--nsamples 32] [--max-windows 64]

storage  For every prunable linear (nn.Linear, lm_head aside) at 50/60/70 % and 2:4: bytes and bits per kept
         weight of dense fp16, bitmask, CSR (int32 / int16 columns, int32 row pointers), 2:4 metadata,
         compressed-tensors (the package's own BitmaskTensor / Sparse24BitMaskTensor on fp16 weights) and
         cs256 (fp16, int8 and int4 values). Masks: magnitude per row (per_row / 2:4), and magnitude under the
         cs256 pattern for cs256 (the storage depends on the mask's structure only). Also the whole model's
         exported file (fp16) per format.
speed    cs256 encode / decode throughput over all linears (and the compressed-tensors bitmask for reference);
         y = x Wᵀ over the 7 linears of one decoder block at batch 1 and 8: dense fp32, torch CSR, cs256
         straight from the format (index decoded per call), cs256 with its index decoded once, cs256 int8,
         and the bitmask (decompress, then dense). CPU, --threads threads, fastest block of torch.utils.benchmark.
quality  Perplexity of per-row (unstructured within a row, as Wanda) vs cs256-constrained masks at the same
         sparsity, for Wanda and SparseSwaps (from Wanda), each in a fresh subprocess through maskopt.prune.
Writes bench/results/storage.json and storage.md.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from common import CALIB, MODELS, RESULTS, TEXTS, model_path  # noqa: E402

SETTINGS = {"50%": ("per_row", 0.5), "60%": ("per_row", 0.6), "70%": ("per_row", 0.7), "2:4": ("2:4", 0.5),
            "90%": ("per_row", 0.9)}  # 90 %: beyond the CS256 / bitmask crossover (docs/cs256.md), storage only


def load(name: str):
    from maskopt.model.loading import load_model

    src = model_path(name)
    model, tok = load_model(src)
    return model.eval(), tok, str(src)


def linears(model) -> dict[str, torch.Tensor]:
    """The prunable weights by name, as (rows, d) — the package adapter's view of the model."""
    from maskopt.model.adapters import get_adapter

    adapter = get_adapter(model)
    return {n: adapter.get_weight(m).detach() for n, m in adapter.named_linears(model).items()}


def masks_for(W: torch.Tensor, setting: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(reference mask: per-row or 2:4, cs256 mask) by magnitude."""
    from maskopt.solve.patterns import Pattern

    pat, sp = SETTINGS[setting]
    ref = Pattern.parse(pat)
    m_ref = ref.topk_mask(W.abs(), ref.keep_per_group(*W.shape, sp))
    if pat == "2:4":
        return m_ref, m_ref
    cs = Pattern.parse("cs256")
    return m_ref, cs.topk_mask(W.abs(), cs.keep_per_group(*W.shape, sp))


def tensor_bytes(d: dict[str, torch.Tensor]) -> int:
    return sum(v.numel() * v.element_size() for v in d.values())


# ---- storage ------------------------------------------------------------------------------------
def storage(model_name: str, settings: list[str], file_settings: list[str]) -> dict:
    from compressed_tensors.compressors.sparse_compressors.sparse_24_bitmask import Sparse24BitMaskTensor
    from compressed_tensors.compressors.sparse_compressors.sparse_bitmask import BitmaskTensor

    from maskopt.export.cs256 import encode

    model, tok, src = load(model_name)
    lin = linears(model)
    out = {"source": src, "linear_weights": sum(W.numel() for W in lin.values()), "settings": {}}
    for setting in settings:
        acc: dict[str, dict[str, float]] = {}

        def add(fmt: str, total: int, index: int, kept: int) -> None:
            a = acc.setdefault(fmt, {"bytes": 0, "index_bytes": 0, "kept": 0})
            a["bytes"] += total
            a["index_bytes"] += index
            a["kept"] += kept

        weights = 0
        for name, W in lin.items():
            m_ref, m_cs = masks_for(W, setting)
            rows, d = W.shape
            nnz = int(m_ref.sum())
            weights += W.numel()
            W16 = (W * m_ref).half()
            add("dense fp16", 2 * W.numel(), 0, nnz)
            add("bitmask fp16", 2 * nnz + rows * math.ceil(d / 8), rows * math.ceil(d / 8), nnz)
            add("CSR int32 fp16", 2 * nnz + 4 * nnz + 4 * (rows + 1), 4 * nnz + 4 * (rows + 1), nnz)
            add("CSR int16 fp16", 2 * nnz + 2 * nnz + 4 * (rows + 1), 2 * nnz + 4 * (rows + 1), nnz)
            if setting == "2:4":
                add("2:4 metadata fp16", 2 * nnz + nnz // 4, nnz // 4, nnz)  # 2 bits per kept weight
                ct = Sparse24BitMaskTensor.from_dense(W16, "2:4").dict(name_prefix=name, device="cpu")
                add("compressed-tensors 2:4", tensor_bytes(ct), tensor_bytes(ct) - 2 * nnz, nnz)
            ct = BitmaskTensor.from_dense(W16).dict(name_prefix=name, device="cpu")
            add("compressed-tensors bitmask", tensor_bytes(ct), tensor_bytes(ct) - 2 * nnz, nnz)
            W16c = (W * m_cs).half()
            for label, quant in (("cs256 fp16", "none"), ("cs256 int8", "int8"), ("cs256 int4", "int4")):
                t = encode(W16c, m_cs, quant=quant)
                nb = t.nbytes()
                add(label, nb["index"] + nb["values"], nb["index"], t.nnz)
        rows = {}
        for fmt, a in acc.items():
            rows[fmt] = {**a, "bits_per_kept": 8 * a["bytes"] / a["kept"], "index_bits_per_kept": 8 * a["index_bytes"] / a["kept"],
                         "density": a["kept"] / weights, "MB": a["bytes"] / 2**20}
        out["settings"][setting] = {"formats": rows,
                                    "files_MB": exported_sizes(model, tok, setting) if setting in file_settings else {}}
        print(model_name, setting, {k: round(v["bits_per_kept"], 2) for k, v in rows.items()}, flush=True)
    return out


def exported_sizes(model, tok, setting: str) -> dict[str, float]:
    """Size (MB) of the whole exported fp16 model per format (magnitude masks of ``setting``). cs256 pads
    tiles whose count is off only because a kept weight is exactly zero (common in dequantized GGUF)."""
    import copy

    from maskopt.export import export_model

    res = {}
    for label, cs in (("hf (dense zeros)", False), ("compressed-tensors", False), ("cs256", True),
                      ("cs256 int4", True)):
        m = copy.deepcopy(model).half()
        with torch.no_grad():
            for W in linears(m).values():
                W.mul_(masks_for(W.float(), setting)[1 if cs else 0])
        fmt, opts = {"hf (dense zeros)": ("hf", {}), "compressed-tensors": ("compressed-tensors", {}),
                     "cs256": ("cs256", {"pad": True}), "cs256 int4": ("cs256", {"quant": "int4", "pad": True})}[label]
        with tempfile.TemporaryDirectory() as tmp:
            export_model(m, None, Path(tmp) / "x", fmt, **opts)
            res[label] = sum(f.stat().st_size for f in (Path(tmp) / "x").glob("*.safetensors")) / 2**20
    return res


# ---- speed ----------------------------------------------------------------------------------------
def _best_ms(fn, min_run_time: float = 0.5) -> float:
    """Fastest block mean of torch.utils.benchmark (robust to the other jobs sharing these 2 cores)."""
    from torch.utils.benchmark import Timer

    return min(Timer("fn()", globals={"fn": fn}).blocked_autorange(min_run_time=min_run_time).times) * 1e3


def speed(model_name: str, threads: int) -> dict:
    import torch.nn.functional as F
    from compressed_tensors.compressors.sparse_compressors.sparse_bitmask import BitmaskTensor

    from maskopt.export.cs256 import decode, encode, index, matmul

    torch.set_num_threads(threads)
    model, _, src = load(model_name)
    lin = linears(model)
    res: dict = {"source": src, "threads": threads, "codec": {}, "matmul": {}, "cuda_2of4": speed_cuda24(model_name)}
    for setting in ("50%", "70%"):
        masks = {n: masks_for(W, setting) for n, W in lin.items()}
        weights = sum(W.numel() for W in lin.values())
        t0 = time.perf_counter()
        enc = {n: encode(lin[n] * masks[n][1], masks[n][1]) for n in lin}
        t_enc = time.perf_counter() - t0
        t0 = time.perf_counter()
        for t in enc.values():
            decode(t)
        t_dec = time.perf_counter() - t0
        t0 = time.perf_counter()
        bm = {n: BitmaskTensor.from_dense(lin[n] * masks[n][0]) for n in lin}
        t_bm_enc = time.perf_counter() - t0
        t0 = time.perf_counter()
        for b in bm.values():
            b.decompress()
        t_bm_dec = time.perf_counter() - t0
        res["codec"][setting] = {"weights": weights, "cs256_encode_Mweights_per_s": weights / t_enc / 1e6,
                                 "cs256_decode_Mweights_per_s": weights / t_dec / 1e6,
                                 "bitmask_encode_Mweights_per_s": weights / t_bm_enc / 1e6,
                                 "bitmask_decode_Mweights_per_s": weights / t_bm_dec / 1e6}
        print(model_name, setting, res["codec"][setting], flush=True)
        block = [n for n in lin if ".layers.0." in n]
        for batch in (1, 8):
            xs = {n: torch.randn(batch, lin[n].shape[1]) for n in block}
            dense = {n: lin[n] * masks[n][0] for n in block}
            csr = {n: dense[n].to_sparse_csr() for n in block}
            plans = {n: index(enc[n]) for n in block}
            q8 = {n: encode(lin[n] * masks[n][1], masks[n][1], quant="int8") for n in block}
            bmb = {n: bm[n] for n in block}
            fns = {
                "dense fp32": lambda: [F.linear(xs[n], dense[n]) for n in block],
                "torch CSR fp32": lambda: [(csr[n] @ xs[n].T).T for n in block],
                "cs256 fp32 (from format)": lambda: [matmul(xs[n], enc[n]) for n in block],
                "cs256 fp32 (index decoded once)": lambda: [matmul(xs[n], enc[n], plans[n]) for n in block],
                "cs256 int8 (from format)": lambda: [matmul(xs[n], q8[n]) for n in block],
                "bitmask (decompress + dense)": lambda: [F.linear(xs[n], bmb[n].decompress()) for n in block],
            }
            ref, ref_cs = fns["dense fp32"](), [F.linear(xs[n], lin[n] * masks[n][1]) for n in block]
            for want, got in ((ref, fns["torch CSR fp32"]()), (ref_cs, fns["cs256 fp32 (from format)"]())):
                assert all(torch.allclose(a, b, atol=1e-4, rtol=1e-4) for a, b in zip(want, got))
            res["matmul"][f"{setting} b={batch}"] = {k: _best_ms(f) for k, f in fns.items()}
            print(model_name, setting, batch, {k: round(v, 3) for k, v in res["matmul"][f"{setting} b={batch}"].items()},
                  flush=True)
    return res


def speed_cuda24(model_name: str) -> dict:
    """2:4 linears of block 0 on sparse tensor cores (fp16) vs dense fp16: matmul and conversion time."""
    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device"}
    from torch.sparse import to_sparse_semi_structured
    from torch.utils.benchmark import Timer

    model, _, _ = load(model_name)
    lin = {n: W for n, W in linears(model).items() if ".layers.0." in n}
    dense = {n: (W * masks_for(W, "2:4")[0]).half().cuda() for n, W in lin.items()}
    keep = [n for n, W in dense.items() if W.shape[0] % 64 == 0 and W.shape[1] % 128 == 0]
    t0 = time.perf_counter()
    sparse = {n: to_sparse_semi_structured(dense[n]) for n in keep}
    torch.cuda.synchronize()
    res = {"layers": keep, "convert_ms": (time.perf_counter() - t0) * 1e3}
    for batch in (16, 64, 256):  # the kernels need a batch that is a multiple of 8 / 16
        xs = {n: torch.randn(batch, dense[n].shape[1], dtype=torch.float16, device="cuda") for n in keep}
        run = {"dense fp16": lambda: [torch.nn.functional.linear(xs[n], dense[n]) for n in keep],
               "2:4 semi-structured": lambda: [torch.nn.functional.linear(xs[n], sparse[n]) for n in keep]}
        res[f"b={batch}"] = {k: Timer("f(); torch.cuda.synchronize()", globals={"f": f, "torch": torch})
                             .blocked_autorange(min_run_time=0.3).median * 1e3 for k, f in run.items()}
    return res


# ---- quality --------------------------------------------------------------------------------------
def one_quality(model_name: str, method: str, pattern: str, sparsity: float, nsamples: int, seqlen: int,
                max_windows: int, threads: int) -> dict:
    import maskopt

    torch.set_num_threads(threads)
    model, tok, _ = load(model_name)
    text = TEXTS["heldout"] if model_name == "tiny" else TEXTS["wikitext"]
    cfg = maskopt.PruneConfig(method=method, sparsity=sparsity, pattern=pattern, nsamples=nsamples, seqlen=seqlen,
                              reference=None, progress=False, device="cpu")
    t = time.time()
    rep = maskopt.prune(model, str(CALIB), cfg, tokenizer=tok)
    prune_s = time.time() - t
    ppl = maskopt.evaluate(model, tok, [str(text)], progress=False, max_windows=max_windows or None)
    return {"ppl": next(iter(ppl.values())), "sparsity": rep.sparsity, "prune_seconds": prune_s,
            "mean_relative_error": sum(r.relative_error for r in rep.layers) / len(rep.layers), "text": text.name}


def quality(model_names: list[str], methods: list[str], sparsities: list[float], a) -> dict:
    res: dict = {}
    for model_name in model_names:
        for method in methods:
            for sp in sparsities:
                for pattern in ("per_row", "cs256"):
                    job = json.dumps(dict(model_name=model_name, method=method, pattern=pattern, sparsity=sp,
                                          nsamples=a.nsamples, seqlen=a.seqlen, max_windows=a.max_windows,
                                          threads=a.threads))
                    p = subprocess.run([sys.executable, __file__, "--one", job], capture_output=True, text=True)
                    if "RESULT " not in p.stdout:
                        r = {"error": p.stderr[-1500:]}
                    else:
                        r = json.loads(p.stdout.split("RESULT ", 1)[1])
                    res.setdefault(model_name, {}).setdefault(method, {}).setdefault(f"{sp:.0%}", {})[pattern] = r
                    print(model_name, method, sp, pattern, r if "error" not in r else r["error"][-300:], flush=True)
    return res


# ---- report ---------------------------------------------------------------------------------------
def markdown(out: dict) -> str:
    cmds = "\n".join(f"    {c}" for c in out.get("commands", []))
    lines = [f"# Storage, speed and quality of the sparse formats\n\nCommands (in this order, each merges into the JSON):\n\n{cmds}\n"]
    for model_name, st in out.get("storage", {}).items():
        lines.append(f"## Storage: {model_name} ({st['linear_weights'] / 1e6:.1f} M weights in the linears; "
                     "magnitude masks)\n")
        lines.append("Bits per kept weight, total (index part in parentheses); values fp16 unless the format says.\n")
        fmts = list(next(iter(st["settings"].values()))["formats"])
        for s in st["settings"].values():
            fmts += [f for f in s["formats"] if f not in fmts]
        lines.append("| format | " + " | ".join(st["settings"]) + " |")
        lines.append("|---|" + "---:|" * len(st["settings"]))
        for f in fmts:
            cells = []
            for s in st["settings"].values():
                r = s["formats"].get(f)
                cells.append("–" if r is None else f"{r['bits_per_kept']:.2f} ({r['index_bits_per_kept']:.2f})")
            lines.append(f"| {f} | " + " | ".join(cells) + " |")
        lines.append("\n| MB in the linears | " + " | ".join(st["settings"]) + " |")
        lines.append("|---|" + "---:|" * len(st["settings"]))
        for f in fmts:
            lines.append(f"| {f} | " + " | ".join("–" if f not in s["formats"] else f"{s['formats'][f]['MB']:.2f}"
                                                 for s in st["settings"].values()) + " |")
        fs = {k: v["files_MB"] for k, v in st["settings"].items() if v.get("files_MB")}
        if fs:
            lines.append("\n| whole exported model, MB (fp16) | " + " | ".join(fs) + " |")
            lines.append("|---|" + "---:|" * len(fs))
            for f in next(iter(fs.values())):
                lines.append(f"| {f} | " + " | ".join(f"{v[f]:.1f}" for v in fs.values()) + " |")
        lines.append("")
    for model_name, sp in out.get("speed", {}).items():
        lines.append(f"## Speed: {model_name} (CPU, {sp['threads']} thread(s))\n")
        lines.append("| codec, M weights/s | " + " | ".join(sp["codec"]) + " |")
        lines.append("|---|" + "---:|" * len(sp["codec"]))
        for k in next(iter(sp["codec"].values())):
            if k != "weights":
                lines.append(f"| {k.replace('_Mweights_per_s', '')} | " + " | ".join(f"{c[k]:.1f}" for c in sp["codec"].values()) + " |")
        lines.append("\ny = x Wᵀ over the 7 linears of block 0, ms (fastest block of torch.utils.benchmark):\n")
        keys = list(sp["matmul"])
        lines.append("| method | " + " | ".join(keys) + " |")
        lines.append("|---|" + "---:|" * len(keys))
        for m in next(iter(sp["matmul"].values())):
            lines.append(f"| {m} | " + " | ".join(f"{sp['matmul'][k][m]:.3f}" for k in keys) + " |")
        c24 = sp.get("cuda_2of4", {})
        lines.append(f"2:4 on GPU (torch.sparse.to_sparse_semi_structured): "
                     f"{c24.get('skipped') or json.dumps({k: v for k, v in c24.items() if k != 'layers'})}\n")
    for model_name, q in out.get("quality", {}).items():
        lines.append(f"## Quality: {model_name}\n")
        lines.append("| method | sparsity | per-row ppl | cs256 ppl | cs256 / per-row | actual sparsity per-row / cs256 |")
        lines.append("|---|---|---:|---:|---:|---|")
        for method, by_sp in q.items():
            for sp, r in by_sp.items():
                a, b = r.get("per_row", {}), r.get("cs256", {})
                if "ppl" in a and "ppl" in b:
                    lines.append(f"| {method} | {sp} | {a['ppl']:.2f} | {b['ppl']:.2f} | {b['ppl'] / a['ppl']:.4f} | "
                                 f"{a['sparsity']:.4f} / {b['sparsity']:.4f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="*", default=["tiny", "smollm"])
    ap.add_argument("--parts", nargs="*", default=["storage", "speed", "quality"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--storage-settings", nargs="*", default=["50%", "60%", "70%", "2:4"], choices=list(SETTINGS))
    ap.add_argument("--file-settings", nargs="*", default=["50%", "2:4"], choices=list(SETTINGS),
                    help="settings at which the whole model is exported to measure its file size")
    ap.add_argument("--quality-models", nargs="*", default=["tiny"])
    ap.add_argument("--quality-methods", nargs="*", default=["wanda", "sparseswaps"])
    ap.add_argument("--sparsities", nargs="*", type=float, default=[0.5, 0.6, 0.7])
    ap.add_argument("--nsamples", type=int, default=32)
    ap.add_argument("--seqlen", type=int, default=256)
    ap.add_argument("--max-windows", type=int, default=64)
    ap.add_argument("--out", default=str(RESULTS / "storage.json"))
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print("RESULT " + json.dumps(one_quality(**json.loads(a.one))))
        return
    path = Path(a.out)
    out = json.loads(path.read_text()) if path.exists() else {}
    cmd = ".venv/bin/python bench/storage.py " + " ".join(sys.argv[1:])
    out["commands"] = [c for c in out.get("commands", []) if c != cmd] + [cmd]
    out.pop("command", None)
    def write() -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=1))
        path.with_suffix(".md").write_text(markdown(out))

    for part in a.parts:
        if part == "quality":
            out.setdefault("quality", {}).update(quality(a.quality_models, a.quality_methods, a.sparsities, a))
            write()
            continue
        for m in a.models:
            if part == "storage":
                new = storage(m, a.storage_settings, a.file_settings)
                old = out.setdefault("storage", {}).get(m, {"settings": {}})
                new["settings"] = {**old["settings"], **new["settings"]}
                out["storage"][m] = new
            else:
                out.setdefault("speed", {})[m] = speed(m, a.threads)
            write()
    print(markdown(out))


if __name__ == "__main__":
    main()
