"""The pruning pipeline: calibrate block by block, solve every layer problem, apply, report."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from .model.adapters import Adapter, get_adapter
from .model.calibrate import collect_grams, walk_blocks
from .config import PruneConfig
from .data import calibration_windows, context_length, read_texts, tokenize
from .solve.methods import get_method
from .solve.problem import LayerProblem, Solution
from .report import LayerRecord, PruneReport, peak_memory_mb, versions


def resolve_device(device: str | None) -> torch.device:
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def check_finite_weights(model: nn.Module, adapter: Adapter) -> None:
    """NaN/Inf in a prunable weight is an error naming the layer (checked before any work)."""
    for i, block in enumerate(adapter.get_blocks(model)):
        for name, mod in adapter.linears(block).items():
            if not torch.isfinite(mod.weight).all():
                raise ValueError(f"weight of {adapter.blocks}.{i}.{name} contains NaN or Inf")


def make_windows(calibration, tokenizer, model, config: PruneConfig) -> torch.Tensor:
    """Calibration as token windows: a ready (n × L) tensor, or text file(s) / dataset name(s)."""
    if isinstance(calibration, torch.Tensor):
        if calibration.ndim != 2 or calibration.numel() == 0:
            raise ValueError("calibration tensor must be a non-empty (nsamples × seqlen) tensor of token ids")
        return calibration.long()
    if tokenizer is None:
        raise ValueError("calibration given as text needs a tokenizer")
    seqlen = config.seqlen or context_length(model)
    ids = tokenize(tokenizer, read_texts(calibration))
    return calibration_windows(ids, config.nsamples, seqlen, config.seed)


def apply_solution(adapter: Adapter, module: nn.Module, problem: LayerProblem, sol: Solution) -> None:
    """Write the masked (and possibly updated) weights back; infeasible masks are bugs, never applied."""
    if not problem.is_feasible(sol.mask):
        raise RuntimeError(f"method returned an infeasible mask for {problem.name} (pattern {problem.pattern})")
    W = sol.weight if sol.weight is not None else problem.W
    adapter.set_weight(module, (W * sol.mask).to(problem.W.dtype))


def prune(model: nn.Module, calibration, config: PruneConfig | None = None, *, tokenizer=None) -> PruneReport:
    """Prune ``model`` in place, block by block; return the per-layer report.

    ``calibration``: token windows (n × L tensor), or text file(s)/dataset name(s) with ``tokenizer``.
    """
    config = config or PruneConfig()
    t0 = time.time()
    adapter = get_adapter(model)
    check_finite_weights(model, adapter)
    device = resolve_device(config.device)
    method = get_method(config.method, **config.method_options)
    reference = get_method(config.reference) if config.reference and config.reference != config.method else None
    windows = make_windows(calibration, tokenizer, model, config)
    config.seqlen = int(windows.shape[1])
    certify_layer = None
    if config.certify:
        from .certify.bounds import certify_layer  # noqa: PLC0415
    report = PruneReport(config=config.to_dict(), model=getattr(model.config, "_name_or_path", ""))
    use_cache = getattr(model.config, "use_cache", None)
    model.config.use_cache = False

    def step(i: int, block: nn.Module, batches) -> None:
        grams = collect_grams(block, adapter, batches, device)
        for name, module in adapter.linears(block).items():
            t = time.time()
            full = f"{adapter.blocks}.{i}.{name}"
            W = adapter.get_weight(module).to(torch.float32)
            problem = LayerProblem(W, grams[name].to(torch.float32), config.pattern, config.sparsity, name=full,
                                   seed=config.seed)
            sol = method.solve(problem)
            err = problem.error(sol.mask, sol.weight)
            energy = max(problem.dense_energy(), 1e-300)
            rec = LayerRecord(full, (problem.rows, problem.d), problem.kept_fraction, err, err / energy,
                              info=_jsonable(sol.info))
            if reference is not None:
                rec.reference_error = problem.error(reference.solve(problem).mask)
                rec.reference_relative_error = rec.reference_error / energy
            elif config.reference:
                rec.reference_error, rec.reference_relative_error = rec.error, rec.relative_error
            if certify_layer is not None:
                rec.info["certificate"] = _jsonable(certify_layer(problem, sol.mask, shift=config.certify_shift).as_dict())
            apply_solution(adapter, module, problem, sol)
            rec.seconds = time.time() - t
            report.layers.append(rec)

    try:
        walk_blocks(model, adapter, windows, step, device=device, batch_size=config.batch_size,
                    offload=config.offload, desc=f"pruning ({config.method})", progress=config.progress)
    finally:
        model.config.use_cache = use_cache
    report.sparsity = measured_sparsity(model, adapter)
    report.prune_seconds = report.wall_seconds = time.time() - t0
    report.peak_memory_mb = peak_memory_mb()
    report.versions = versions()
    return report


def measured_sparsity(model: nn.Module, adapter: Adapter) -> float:
    zeros = total = 0
    for block in adapter.get_blocks(model):
        for mod in adapter.linears(block).values():
            zeros += int((mod.weight == 0).sum())
            total += mod.weight.numel()
    return zeros / max(total, 1)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.item() if obj.numel() == 1 else obj.tolist()
    if isinstance(obj, (int, float, str, bool)) or obj is None:
        return obj
    return str(obj)
