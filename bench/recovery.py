"""Benchmark (not a test): perplexity after pruning + recovery on a real model.

For every sparsity (unstructured per-row %, or N:M) and mask method, prune once, then apply each
recovery variant to a copy: reconstruction at every granularity, PERP (norms+biases, MaskLoRA,
ScaleLoRA), and the combined pipeline 'subblock+masklora'. Reports held-out perplexity, wall time
and peak memory (RSS on CPU, allocated on CUDA) of the recovery step. Writes JSON after every row
and prints a Markdown table.

    .venv/bin/python bench/recovery.py            # defaults below (~15 min on 1 CPU thread)
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import threading
import time
from pathlib import Path

import torch

from maskopt.config import PruneConfig
from maskopt.data import calibration_windows, eval_windows, read_texts, tokenize
from maskopt.perplexity import perplexity
from maskopt.model.loading import load_model
from maskopt.run.job import prune
from maskopt.recover import PERPConfig, ReconstructConfig, perp_retrain, reconstruct

ROOT = Path(__file__).resolve().parents[1]


class PeakMemory:
    """Peak resident memory (MB) of this process while inside the block (sampled every 10 ms);
    on CUDA the peak allocated tensor memory."""

    def __init__(self, device: torch.device):
        self.device, self.peak, self._stop = device, 0.0, threading.Event()

    @staticmethod
    def _rss_mb() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss_mb())
            time.sleep(0.01)

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self._t = threading.Thread(target=self._sample, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device) / 2**20


def recover(variant: str, pruned, dense, calib, train, args, device) -> dict:
    """Apply one recovery variant ('none', a granularity, 'perp:<mode>', or 'A+B') in place."""
    info: dict = {}
    for part in variant.split("+"):
        if part == "none":
            continue
        if part in ("matrix", "subblock", "block", "blocks"):
            cfg = ReconstructConfig(granularity=part, n_blocks=args.n_blocks, lr=args.recon_lr,
                                    epochs=args.recon_epochs, batch_size=args.batch_size)
            r = reconstruct(pruned, dense, calib, cfg, device=device, batch_size=args.batch_size, progress=False)
            info[part] = {"mse_before": r["mse_before"], "mse_after": r["mse_after"],
                          "reverted_units": sum(u["reverted"] for u in r["units"]), "units": len(r["units"])}
        else:
            mode = part.removeprefix("perp:")
            cfg = PERPConfig(mode=mode, lr=args.perp_lr, epochs=args.perp_epochs, batch_size=args.batch_size)
            r = perp_retrain(pruned, train, cfg, device=device, progress=False)
            info[part] = {k: r[k] for k in ("steps", "tokens_per_s", "loss_first", "loss_last", "trainable_params")}
    return info


def sparsity_of(model) -> float:
    from maskopt.model.adapters import get_adapter  # noqa: PLC0415
    from maskopt.stages.prune import measured_sparsity  # noqa: PLC0415

    return measured_sparsity(model, get_adapter(model))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(ROOT.parent / "shared/models/maskopt-tiny-llama"))
    p.add_argument("--calib", default=str(ROOT.parent / "shared/data/english-calib/calib.txt"))
    p.add_argument("--eval", default=str(ROOT.parent / "shared/data/english-heldout/test.txt"))
    p.add_argument("--nsamples", type=int, default=32, help="calibration windows (pruning and reconstruction)")
    p.add_argument("--perp-samples", type=int, default=32, help="training windows for PERP (other seed)")
    p.add_argument("--seqlen", type=int, default=256)
    p.add_argument("--eval-windows", type=int, default=24)
    p.add_argument("--sparsities", default="0.6,2:4", help="full grid of recovery variants")
    p.add_argument("--target-sparsity", default="0.5", help="only none / subblock / subblock+perp:masklora")
    p.add_argument("--methods", default="wanda,sparsegpt,sparseswaps")
    p.add_argument("--variants", default="none,matrix,subblock,block,blocks,perp:norms_biases,perp:masklora,"
                                         "perp:scalelora,subblock+perp:masklora")
    p.add_argument("--target-variants", default="none,subblock,subblock+perp:masklora")
    p.add_argument("--n-blocks", type=int, default=2)
    p.add_argument("--recon-lr", type=float, default=1e-3)
    p.add_argument("--recon-epochs", type=int, default=1)
    p.add_argument("--perp-lr", type=float, default=5e-4)
    p.add_argument("--perp-epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default=str(ROOT / "bench/results/recovery.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    t_start = time.time()

    dense, tok = load_model(args.model)
    calib_ids = tokenize(tok, read_texts(args.calib))
    calib = calibration_windows(calib_ids, args.nsamples, args.seqlen, seed=0)
    train = calibration_windows(calib_ids, args.perp_samples, args.seqlen, seed=1)
    evw = eval_windows(tokenize(tok, read_texts(args.eval)), args.seqlen, args.eval_windows)
    ppl = lambda m: perplexity(m, evw, device=device, batch_size=args.batch_size, progress=False)  # noqa: E731
    dense_ppl = ppl(dense)
    out = {"command": "python bench/recovery.py " + " ".join(os.sys.argv[1:]), "args": vars(args),
           "device": str(device), "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
           "dense_ppl": dense_ppl, "rows": []}
    print(f"dense perplexity {dense_ppl:.2f}", flush=True)

    plan = [(s, args.variants.split(",")) for s in args.sparsities.split(",") if s]
    plan += [(s, args.target_variants.split(",")) for s in args.target_sparsity.split(",") if s]
    for spec, variants in plan:
        pattern, sparsity = (spec, 0.5) if ":" in spec else ("per_row", float(spec))
        for method in args.methods.split(","):
            base = copy.deepcopy(dense)
            t = time.time()
            prune(base, calib, PruneConfig(method=method, sparsity=sparsity, pattern=pattern, device=str(device),
                                           progress=False, reference=None))
            prune_s = time.time() - t
            for variant in variants:
                model = copy.deepcopy(base)
                t = time.time()
                try:
                    with PeakMemory(device) as mem:
                        info = recover(variant, model, dense, calib, train, args, device)
                    err = None
                except (ValueError, FloatingPointError) as e:
                    info, err = {}, str(e)
                row = {"sparsity": spec, "method": method, "recovery": variant, "prune_seconds": prune_s,
                       "recovery_seconds": time.time() - t, "peak_memory_mb": mem.peak,
                       "ppl": ppl(model) if err is None else None, "measured_sparsity": sparsity_of(model),
                       "error": err, "info": info}
                out["rows"].append(row)
                print(f"{spec:>5} {method:>11} {variant:>24}  ppl {row['ppl'] or float('nan'):8.2f}  "
                      f"{row['recovery_seconds']:6.1f}s  {row['peak_memory_mb']:7.0f} MB", flush=True)
                Path(args.out).write_text(json.dumps(out, indent=1))
                del model
    out["total_seconds"] = time.time() - t_start
    Path(args.out).write_text(json.dumps(out, indent=1))
    print()
    print(markdown(out))


def markdown(out: dict) -> str:
    """One table per sparsity: rows = recovery variant, columns = mask method (ppl, recovery time)."""
    lines = [f"Dense perplexity: **{out['dense_ppl']:.2f}** (dense + 20% = {1.2 * out['dense_ppl']:.2f}).", ""]
    by_s: dict = {}
    for r in out["rows"]:
        by_s.setdefault(r["sparsity"], []).append(r)
    for spec, rows in by_s.items():
        methods = list(dict.fromkeys(r["method"] for r in rows))
        variants = list(dict.fromkeys(r["recovery"] for r in rows))
        label = f"{float(spec):.0%} (per row)" if ":" not in spec else spec
        lines += [f"**Sparsity {label}** — perplexity (recovery seconds, peak MB)", "",
                  "| recovery | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
        for v in variants:
            cells = []
            for m in methods:
                r = next((x for x in rows if x["method"] == m and x["recovery"] == v), None)
                if r is None:
                    cells.append("–")
                elif r["ppl"] is None:
                    cells.append(f"error: {r['error'][:40]}")
                else:
                    cells.append(f"{r['ppl']:.2f} ({r['recovery_seconds']:.0f} s, {r['peak_memory_mb']:.0f} MB)")
            lines.append(f"| {v} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
