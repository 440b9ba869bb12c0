"""Layer-wise reconstruction after pruning ("A Free Lunch in LLM Compression: Revisiting Retraining after
Pruning", Wagner, Roux, Zimmer, Pokutta, 2025, arXiv:2510.14444).

Sequential pass over the blocks with two streams: the dense model gives each unit's target
Y = f_dense(X_dense); the pruned model gives its inputs X (pruned inputs by default, so the
errors of earlier, already reconstructed units are seen). Each unit minimizes
MSE(f_unit(X), Y) over its kept weights (masks M = W ≠ 0 fixed: W ← W ⊙ M after every step),
by AdamW, or in closed form per matrix (see lstsq.py). Only the current unit's block(s) and
its cached inputs/targets need to be on the device.
"""
from __future__ import annotations

import math
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..model.adapters import get_adapter
from ..model.calibrate import Batch, BlockStep, BlockWalker, to_device
from .config import ReconstructConfig, RecoveryError
from .lora import attach_lora, merge_lora
from ..solve.lstsq import masked_lstsq
from ..model.masks import apply_masks
from .params import ModuleMasks, frozen, norm_and_bias_params, restore, snapshot, weight_masks, weights_of
from .units import UNIT_MAKERS, Unit, UnitInput, block_inputs, capture_tap, cast_floats, make_units


def check_windows(windows: torch.Tensor) -> None:
    if not isinstance(windows, torch.Tensor) or windows.ndim != 2 or windows.numel() == 0:
        shape = tuple(windows.shape) if isinstance(windows, torch.Tensor) else type(windows).__name__
        raise ValueError(f"need a non-empty (n × seqlen) tensor of token windows, got {shape}: "
                         "the calibration/training text is empty or too short")
    if windows.shape[1] < 2:
        raise ValueError(f"token windows need ≥ 2 tokens, got {windows.shape[1]}")


def _minibatches(inputs: list[UnitInput], targets: list[torch.Tensor], size: int):
    """(input, target) pairs of at most ``size`` sequences, splitting the captured batches."""
    for x, y in zip(inputs, targets):
        n = x.hidden.shape[0]
        for s in range(0, n, size):
            sl = slice(s, min(s + size, n))
            yield (x if size >= n else x.slice(sl)), (y if size >= n else y[sl])


@torch.no_grad()
def unit_mse(unit: Unit, inputs: list[UnitInput], targets: list[torch.Tensor], device: torch.device,
             dtype: torch.dtype) -> float:
    """Mean squared error of the unit's outputs versus the targets over all cached data."""
    total, count = 0.0, 0
    for x, y in zip(inputs, targets):
        out = unit.call(_dev(x, device, dtype))
        total += float(F.mse_loss(out.float(), y.to(device).float(), reduction="sum"))
        count += y.numel()
    return total / max(count, 1)


def _dev(x: UnitInput, device: torch.device, dtype: torch.dtype) -> UnitInput:
    """A unit input on the compute device, floating tensors in the working dtype."""
    return UnitInput(x.hidden.to(device, dtype), cast_floats(to_device(x.args, device), dtype),
                     cast_floats(to_device(x.kwargs, device), dtype), x.hidden_kw)


def _trainable(unit: Unit, config: ReconstructConfig) -> list[nn.Parameter]:
    params = [m.weight for m in unit.linears.values()]
    if config.train_norms_biases:
        seen = {id(p) for p in params}
        for owner in unit.owners:
            for p in norm_and_bias_params(owner).values():
                if id(p) not in seen:
                    seen.add(id(p))
                    params.append(p)
    return params


def _fit_adam(unit: Unit, params: list[nn.Parameter], masks: dict[str, torch.Tensor], inputs: list[UnitInput],
              targets: list[torch.Tensor], epochs: int, config: ReconstructConfig, device: torch.device,
              dtype: torch.dtype) -> int:
    """AdamW on MSE(unit(x), y); W ← W ⊙ M after every step. Returns the number of steps."""
    if epochs == 0:
        return 0
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(config.seed)
    order = list(range(len(inputs)))
    steps = 0
    try:
        for _ in range(epochs):
            perm = torch.randperm(len(order), generator=gen).tolist()
            for x, y in _minibatches([inputs[j] for j in perm], [targets[j] for j in perm], config.batch_size):
                out = unit.call(_dev(x, device, dtype))
                loss = F.mse_loss(out.float(), y.to(device).float())
                if not torch.isfinite(loss):
                    raise RecoveryError(f"{unit.name}: reconstruction loss became {loss.item()} after {steps} steps "
                                        f"(lr={config.lr}); the unit was restored")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                apply_masks(weights_of(unit.linears), masks)
                steps += 1
    finally:
        for p in params:
            p.requires_grad_(False)
            p.grad = None
    return steps


def _fit_lora(unit: Unit, extra: list[nn.Parameter], masks: dict[str, torch.Tensor], inputs: list[UnitInput],
              targets: list[torch.Tensor], config: ReconstructConfig, device: torch.device, dtype: torch.dtype) -> int:
    """PERP's sparsity-keeping LoRA inside layer-wise reconstruction: train only the low-rank factors (and
    ``extra``, norms/biases) on the unit's MSE, then merge them into the kept weights."""
    factors = attach_lora(unit.linears, config.lora, config.lora_r, config.lora_alpha, masks)
    try:
        steps = _fit_adam(unit, factors + extra, masks, inputs, targets, config.epochs, config, device, dtype)
    except BaseException:
        merge_lora(unit.linears, keep=False)
        raise
    merge_lora(unit.linears, keep=True)
    return steps


@torch.no_grad()
def _fit_lstsq(unit: Unit, adapter, masks: dict[str, torch.Tensor], inputs: list[UnitInput],
               targets: list[torch.Tensor], config: ReconstructConfig, device: torch.device) -> None:
    """Closed form for a single linear: G = Σ x xᵀ, B = Σ (y − bias) xᵀ, per-row least squares."""
    ((name, module),) = unit.linears.items()
    W = adapter.get_weight(module)
    d = W.shape[1]
    G = torch.zeros(d, d, dtype=torch.float64, device=device)
    B = torch.zeros(W.shape[0], d, dtype=torch.float64, device=device)
    bias = getattr(module, "bias", None)
    for x, y in zip(inputs, targets):
        X = x.hidden.to(device).reshape(-1, d).double()
        Y = y.to(device).reshape(-1, W.shape[0]).double()
        if bias is not None:
            Y = Y - bias.double()
        G += X.T @ X
        B += Y.T @ X
    mask = adapter.param_layout(masks[name]).to(W.device)
    new = masked_lstsq(G, B, mask, damp=config.damp, W0=W)
    if not torch.isfinite(new).all():
        raise RecoveryError(f"{unit.name}: least squares gave NaN/Inf; the unit was restored")
    adapter.set_weight(module, new)
    apply_masks(weights_of(unit.linears), masks)


def _reconstruct_unit(unit: Unit, adapter, inputs: list[UnitInput], targets: list[torch.Tensor],
                      config: ReconstructConfig, device: torch.device, known: ModuleMasks | None) -> dict[str, Any]:
    t0 = time.perf_counter()
    params = _trainable(unit, config)
    masks = weight_masks(unit.linears, known)
    snap = snapshot(params)
    orig_dtype = params[0].dtype
    work = torch.float32 if orig_dtype in (torch.float16, torch.bfloat16) else orig_dtype
    if work != orig_dtype:
        for o in unit.owners:
            o.to(work)
    try:
        before = unit_mse(unit, inputs, targets, device, work)
        if not math.isfinite(before):
            raise RecoveryError(f"{unit.name}: the unit's MSE is already {before} before reconstruction")
        steps = 0
        if unit.closed_form:
            if config.matrix_lstsq:
                _fit_lstsq(unit, adapter, masks, inputs, targets, config, device)
            steps = _fit_adam(unit, params, masks, inputs, targets, config.matrix_grad_steps
                              if config.matrix_lstsq else max(config.matrix_grad_steps, config.epochs),
                              config, device, work)
        elif config.lora != "none":
            steps = _fit_lora(unit, params[len(unit.linears):], masks, inputs, targets, config, device, work)
        else:
            steps = _fit_adam(unit, params, masks, inputs, targets, config.epochs, config, device, work)
        after = unit_mse(unit, inputs, targets, device, work)
        if not math.isfinite(after):
            raise RecoveryError(f"{unit.name}: reconstruction made the unit's MSE {after}; the unit was restored")
        reverted = config.revert_if_worse and after > before
        if reverted:
            restore(snap)
            after = before
    except BaseException:
        restore(snap)
        raise
    finally:
        if work != orig_dtype:
            for o in unit.owners:
                o.to(orig_dtype)
        apply_masks(weights_of(unit.linears), masks)
    return {"unit": unit.name, "mse_before": before, "mse_after": after, "steps": steps,
            "reverted": reverted, "seconds": time.perf_counter() - t0}


def _unit_data(unit: Unit, dunit: Unit, step: BlockStep, config: ReconstructConfig, device: torch.device,
               store: torch.device) -> tuple[list[UnitInput], list[torch.Tensor]]:
    """Inputs (pruned stream, or dense with ``dense_inputs``) and dense targets of one unit."""
    if unit.tap is None:  # units fed with block inputs: the targets are the dense unit on the dense inputs
        d_x = block_inputs(step.dense_inputs)
        with torch.no_grad():
            targets = [dunit.call(_dev(x, device, x.hidden.dtype)).to(store) for x in d_x]
        return (d_x if config.dense_inputs else block_inputs(step.inputs)), targets
    d_x, targets = capture_tap(step.dense_block, step.dense_inputs, dunit.tap, device, store,
                               inputs=config.dense_inputs, outputs=True)
    if config.dense_inputs:
        return d_x, targets
    p_x, _ = capture_tap(step.block, step.inputs, unit.tap, device, store, inputs=True, outputs=False)
    return p_x, targets


def reconstruct(
    pruned_model: nn.Module, dense_model: nn.Module, windows: torch.Tensor, config: ReconstructConfig | None = None,
    *, device: str | torch.device = "cpu", batch_size: int = 8, offload: bool = True, progress: bool = True,
    masks: ModuleMasks | None = None, walker_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Reconstruct every unit of ``pruned_model`` (in place) towards ``dense_model`` on ``windows``.

    ``batch_size``: sequences per forward when capturing (optimizer steps use ``config.batch_size``,
    at most this). ``masks``: the explicit mask of every prunable linear (by module, parameter layout;
    default: its non-zeros). ``walker_options``: passed to the block walker (resume point, step callback).
    Returns {'units': [{unit, mse_before, mse_after, steps, reverted, seconds}],
    'mse_before'/'mse_after' (means over units), 'seconds', 'config'}.
    Raises ValueError on bad settings/inputs and RecoveryError (a FloatingPointError) on a
    non-finite loss, with the failing unit restored (earlier units stay reconstructed).
    """
    config = config or ReconstructConfig()
    config.validate()
    check_windows(windows)
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    adapter = get_adapter(pruned_model)
    if get_adapter(dense_model) is not adapter:
        raise ValueError("the pruned and the dense model are of different families")
    device = torch.device(device)
    store = torch.device("cpu") if offload and device.type != "cpu" else device
    t0 = time.perf_counter()
    results: list[dict[str, Any]] = []
    pblocks, dblocks = adapter.get_blocks(pruned_model), adapter.get_blocks(dense_model)
    stride = config.n_blocks if UNIT_MAKERS[config.granularity][1] else 1
    walker = BlockWalker(pruned_model, adapter, windows, device=device, batch_size=batch_size, offload=offload,
                         dense_model=dense_model, dense_stream=True, stride=stride,
                         desc=f"reconstruct ({config.granularity})", progress=progress, **(walker_options or {}))
    with frozen(pruned_model, dense_model):
        for step in walker:
            punits = make_units(adapter, pblocks, step.indices, config.granularity)
            dunits = make_units(adapter, dblocks, step.indices, config.granularity)
            for unit, dunit in zip(punits, dunits):
                xs, ys = _unit_data(unit, dunit, step, config, device, store)
                results.append(_reconstruct_unit(unit, adapter, xs, ys, config, device, masks))
                del xs, ys
    n = max(len(results), 1)
    return {
        "granularity": config.granularity,
        "units": results,
        "mse_before": sum(r["mse_before"] for r in results) / n,
        "mse_after": sum(r["mse_after"] for r in results) / n,
        "seconds": time.perf_counter() - t0,
        "config": config.to_dict(),
    }
