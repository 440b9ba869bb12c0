"""End-to-end jobs behind the CLI: load → (evaluate) → prune → evaluate → save with report."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence

import torch

from .config import PruneConfig
from .data import context_length, eval_windows, read_texts, tokenize
from .evaluate import perplexity
from .io import atomic_dir, check_output, write_json
from .loading import load_model
from .pipeline import prune, resolve_device
from .report import PruneReport, peak_memory_mb

Log = Callable[[str], None]


def evaluate_texts(model, tokenizer, texts: Sequence[str | Path], *, seqlen: int | None = None,
                   max_windows: int | None = None, batch_size: int = 4, device=None, progress: bool = True,
                   label: str = "") -> dict[str, float]:
    """Perplexity per text file, windows of min(context, 2048) tokens unless ``seqlen`` is given."""
    seqlen = seqlen or context_length(model)
    out = {}
    for text in texts:
        ids = tokenize(tokenizer, read_texts(text))
        out[_short(text)] = perplexity(model, eval_windows(ids, seqlen, max_windows), device=device,
                                       batch_size=batch_size, progress=progress,
                                       desc=f"{label} ppl {_short(text)}".strip())
    return out


def _short(text: str | Path) -> str:
    p = Path(text)
    return f"{p.parent.name}/{p.name}" if p.parent.name else p.name


def prune_job(model_name: str | Path, out: str | Path | None, config: PruneConfig, *,
              calib: Sequence[str | Path], eval_texts: Sequence[str | Path] = (), eval_seqlen: int | None = None,
              eval_max_windows: int | None = None, overwrite: bool = False, log: Log = print) -> PruneReport:
    """The main job. Nothing is written unless everything succeeded; the output folder appears at once."""
    t0 = time.time()
    if out is not None:
        check_output(out, overwrite)  # fail before any work
    model, tokenizer = load_model(model_name)
    device = resolve_device(config.device)
    dense = {}
    if eval_texts:
        dense = evaluate_texts(model, tokenizer, eval_texts, seqlen=eval_seqlen, max_windows=eval_max_windows,
                               device=device, progress=config.progress, label="dense")
        model.to("cpu")
    report = prune(model, calib, config, tokenizer=tokenizer)
    report.model = str(model_name)
    if eval_texts:
        pruned = evaluate_texts(model, tokenizer, eval_texts, seqlen=eval_seqlen, max_windows=eval_max_windows,
                                device=device, progress=config.progress, label="pruned")
        model.to("cpu")
        report.perplexity = {k: {"dense": dense[k], "pruned": pruned[k]} for k in dense}
        for k, v in report.perplexity.items():
            log(f"perplexity {k}: dense {v['dense']:.2f} → pruned {v['pruned']:.2f}")
    report.wall_seconds = time.time() - t0
    report.peak_memory_mb = peak_memory_mb()
    if out is not None:
        report.output = str(out)
        with atomic_dir(out, overwrite) as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            write_json(tmp / "maskopt_report.json", report.to_dict())
            (tmp / "maskopt_report.md").write_text(report.to_markdown())
        log(f"pruned model and report written to {out} (maskopt_report.json, maskopt_report.md)")
    return report


def eval_job(model_dir: str | Path, texts: Sequence[str | Path], *, seqlen: int | None = None,
             max_windows: int | None = None, device: str | None = None, progress: bool = True) -> dict[str, float]:
    model, tokenizer = load_model(model_dir)
    return evaluate_texts(model, tokenizer, texts, seqlen=seqlen, max_windows=max_windows,
                          device=resolve_device(device), progress=progress)
