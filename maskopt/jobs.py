"""End-to-end jobs behind the CLI: load → (evaluate) → prune → evaluate → save with report."""
from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Callable, Sequence

import torch

from .config import PruneConfig
from .data import context_length, eval_windows, read_texts, tokenize
from .evaluate import perplexity
from .io import atomic_dir, check_output, write_json
from .model.loading import load_model
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


def apply_recovery(model, dense_model, windows: torch.Tensor, reconstruct_cfg=None, perp_cfg=None, *,
                   device=None, batch_size: int = 8, progress: bool = True, log: Log = print) -> dict:
    """Optional recovery after pruning: reconstruction towards the dense model, then PERP retraining."""
    from .recover import perp_retrain, reconstruct  # noqa: PLC0415

    out: dict = {}
    if reconstruct_cfg is not None:
        res = reconstruct(model, dense_model, windows, reconstruct_cfg, device=device, batch_size=batch_size,
                          progress=progress)
        out["reconstruct"] = {k: v for k, v in res.items() if k != "units"} | {"units": res.get("units", [])}
        log(f"reconstruction ({reconstruct_cfg.granularity}): mean unit MSE {res['mse_before']:.4g} → {res['mse_after']:.4g}")
    if perp_cfg is not None:
        res = perp_retrain(model, windows, perp_cfg, device=device, progress=progress)
        out["perp"] = {k: v for k, v in res.items() if k != "losses"}
        log(f"PERP ({perp_cfg.mode}): loss {res['loss_first']:.4f} → {res['loss_last']:.4f}")
        model.to("cpu")
    return out


def prune_job(model_name: str | Path, out: str | Path | None, config: PruneConfig, *,
              calib: Sequence[str | Path], eval_texts: Sequence[str | Path] = (), eval_seqlen: int | None = None,
              eval_max_windows: int | None = None, overwrite: bool = False, reconstruct=None, perp=None,
              log: Log = print) -> PruneReport:
    """The main job. Nothing is written unless everything succeeded; the output folder appears at once.

    ``reconstruct`` / ``perp``: optional recovery configs (maskopt.recover.ReconstructConfig / PERPConfig).
    """
    from .pipeline import make_windows  # noqa: PLC0415

    t0 = time.time()
    if out is not None:
        check_output(out, overwrite)  # fail before any work
    model, tokenizer = load_model(model_name)
    dense_model = copy.deepcopy(model) if reconstruct is not None else None  # targets for reconstruction
    device = resolve_device(config.device)
    windows = make_windows(list(calib), tokenizer, model, config)
    dense = {}
    if eval_texts:
        dense = evaluate_texts(model, tokenizer, eval_texts, seqlen=eval_seqlen, max_windows=eval_max_windows,
                               device=device, progress=config.progress, label="dense")
        model.to("cpu")
    report = prune(model, windows, config, tokenizer=tokenizer)
    report.model = str(model_name)
    if reconstruct is not None or perp is not None:
        report.recovery = apply_recovery(model, dense_model, windows, reconstruct, perp, device=device,
                                         batch_size=config.batch_size, progress=config.progress, log=log)
        del dense_model
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


def mask_from_pruned(W_pruned: torch.Tensor, W_dense: torch.Tensor, problem) -> torch.Tensor:
    """The mask of a saved pruned layer: its non-zeros, completed to the pattern's counts with entries whose
    dense weight is zero (they cost nothing either way), then any pruned entries (stable order)."""
    mask = W_pruned != 0
    if problem.is_feasible(mask):
        return mask
    pat = problem.pattern
    g_mask = pat.to_groups(mask.clone())
    missing = problem.keep - g_mask.sum(1)
    if (missing < 0).any():
        raise ValueError(f"{problem.name}: keeps more weights than pattern {pat} at sparsity {problem.sparsity} allows")
    prio = (~g_mask).to(torch.float32) * (1.0 + (pat.to_groups(W_dense) == 0).to(torch.float32))
    order = torch.argsort(prio, dim=1, descending=True, stable=True)
    take = torch.arange(order.shape[1])[None, :] < missing[:, None]
    g_mask.scatter_(1, order, g_mask.gather(1, order) | take)
    return pat.from_groups(g_mask, *mask.shape)


def certify_job(pruned_dir: str | Path, *, dense: str | Path | None = None, calib: Sequence[str | Path],
                pattern: str | None = None, sparsity: float | None = None, nsamples: int = 128,
                seqlen: int | None = None, seed: int = 0, iterations: int = 300, bnb_rows: int = 0,
                bnb_time_limit: float = 1.0, shift: str = "jacobi", device: str | None = None,
                progress: bool = True) -> list[dict]:
    """Per layer of a pruned model: error of its mask on the dense weights, certified lower bound, gap.

    G is accumulated as during pruning: the dense block's linear inputs on the pruned model's block inputs.
    """
    import json

    from .model.adapters import get_adapter
    from .model.calibrate import collect_grams, walk_blocks
    from .certify.bounds import certify_layer
    from .config import PruneConfig
    from .pipeline import make_windows
    from .solve.problem import LayerProblem

    pruned_dir = Path(pruned_dir)
    rep_path = pruned_dir / "maskopt_report.json"
    saved = json.loads(rep_path.read_text()) if rep_path.exists() else {}
    cfg_saved = saved.get("config", {})
    dense = dense or saved.get("model")
    if not dense:
        raise ValueError("no dense model: pass --dense (the pruned folder has no maskopt_report.json naming it)")
    pattern = pattern or cfg_saved.get("pattern", "per_row")
    sparsity = sparsity if sparsity is not None else cfg_saved.get("sparsity")
    if sparsity is None:
        raise ValueError("pass --sparsity (the pruned folder has no report stating it)")
    cfg = PruneConfig(pattern=pattern, sparsity=sparsity, nsamples=nsamples, seqlen=seqlen, seed=seed, device=device)
    model, tok = load_model(pruned_dir)
    dense_model, _ = load_model(dense)
    adapter = get_adapter(model)
    windows = make_windows(list(calib), tok, model, cfg)
    dev = resolve_device(device)
    dense_blocks = adapter.get_blocks(dense_model)
    rows_out: list[dict] = []

    def step(i: int, block, batches) -> None:
        dblock = dense_blocks[i].to(dev)
        grams = collect_grams(dblock, adapter, batches, dev)
        dlin, plin = adapter.linears(dblock), adapter.linears(block)
        for name in adapter.linear_names():
            Wd = adapter.get_weight(dlin[name]).to(torch.float32)
            problem = LayerProblem(Wd, grams[name].to(torch.float32), cfg.pattern, cfg.sparsity,
                                   name=f"{adapter.blocks}.{i}.{name}")
            mask = mask_from_pruned(adapter.get_weight(plin[name]), Wd, problem)
            rows = list(range(min(bnb_rows, problem.rows))) if bnb_rows and problem.pattern.rowwise else None
            cert = certify_layer(problem, mask, iterations=iterations, rows=rows, bnb_time_limit=bnb_time_limit,
                                 shift=shift)
            d = cert.as_dict()
            d.update(name=problem.name, shape=[problem.rows, problem.d],
                     relative_error=cert.error / max(problem.dense_energy(), 1e-300))
            rows_out.append(d)
        dense_blocks[i].to("cpu")

    model.config.use_cache = False
    walk_blocks(model, adapter, windows, step, device=dev, batch_size=cfg.batch_size, desc="certifying",
                progress=progress)
    return rows_out


def recover_job(pruned_dir: str | Path, out: str | Path, *, dense: str | Path | None = None,
                calib: Sequence[str | Path], reconstruct=None, perp=None, nsamples: int = 128,
                seqlen: int | None = None, seed: int = 0, eval_texts: Sequence[str | Path] = (),
                eval_max_windows: int | None = None, overwrite: bool = False, device: str | None = None,
                progress: bool = True, log: Log = print) -> dict:
    """Recovery on an already pruned model; its zeros are the mask and stay zero. Saves atomically."""
    import json

    from .pipeline import make_windows  # noqa: PLC0415

    if reconstruct is None and perp is None:
        raise ValueError("nothing to do: choose --reconstruct and/or --perp")
    check_output(out, overwrite)
    pruned_dir = Path(pruned_dir)
    rep_path = pruned_dir / "maskopt_report.json"
    saved = json.loads(rep_path.read_text()) if rep_path.exists() else {}
    dense = dense or saved.get("model")
    if reconstruct is not None and not dense:
        raise ValueError("reconstruction needs the dense model: pass --dense")
    model, tokenizer = load_model(pruned_dir)
    dense_model = load_model(dense)[0] if reconstruct is not None else None
    cfg = PruneConfig(nsamples=nsamples, seqlen=seqlen, seed=seed, device=device, progress=progress)
    windows = make_windows(list(calib), tokenizer, model, cfg)
    dev = resolve_device(device)
    result: dict = {"source": str(pruned_dir), "dense": str(dense) if dense else None}
    before = evaluate_texts(model, tokenizer, eval_texts, max_windows=eval_max_windows, device=dev,
                            progress=progress, label="before") if eval_texts else {}
    model.to("cpu")
    result.update(apply_recovery(model, dense_model, windows, reconstruct, perp, device=dev,
                                 batch_size=cfg.batch_size, progress=progress, log=log))
    if eval_texts:
        after = evaluate_texts(model, tokenizer, eval_texts, max_windows=eval_max_windows, device=dev,
                               progress=progress, label="after")
        model.to("cpu")
        result["perplexity"] = {k: {"before": before[k], "after": after[k]} for k in before}
        for k, v in result["perplexity"].items():
            log(f"perplexity {k}: before {v['before']:.2f} → after {v['after']:.2f}")
    with atomic_dir(out, overwrite) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if saved:
            saved["recovery"] = result
            write_json(tmp / "maskopt_report.json", saved)
        write_json(tmp / "maskopt_recovery.json", result)
    log(f"recovered model written to {out}")
    return result
