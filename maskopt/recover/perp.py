"""PERP: parameter-efficient retraining after pruning (Zimmer et al., "PERP: Rethinking the
Prune-Retrain Paradigm in the Era of LLMs").

Mode 'full' is the baseline PERP is compared with: all kept weights of the prunable linears (plus
norms and biases) trained on the same loss and token budget, the mask re-applied after every step.
Otherwise only a small set of parameters is trained with the language-modelling loss
L = −(1/T) Σ_t log p(x_{t+1} | x_≤t): all biases and normalization parameters, plus (optionally)
sparsity-keeping LoRA factors on every prunable linear, merged back at the end. The weights
themselves are frozen, so the mask M (explicit, or W ≠ 0 when none is given) cannot change.
"""
from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..model.adapters import get_adapter
from .config import PERPConfig, RecoveryError
from .lora import KINDS, attach_lora, merge_lora
from ..model.masks import apply_masks
from .params import ModuleMasks, frozen, norm_and_bias_params, restore, snapshot, weight_masks, weights_of
from .reconstruct import check_windows


def _lr_lambda(total: int, warmup: float):
    """Linear warm-up over ⌈warmup·total⌉ steps to the full lr, then linear decay to 0."""
    w = math.ceil(warmup * total)

    def f(step: int) -> float:
        if step < w:
            return (step + 1) / w
        return max(0.0, (total - step) / max(1, total - w))

    return f


def _set_checkpointing(model: nn.Module, on: bool) -> bool:
    if not on:
        return False
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise ValueError(f"{type(model).__name__} does not support gradient checkpointing")
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers ≥ 5.x name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    return True


def _unset_checkpointing(model: nn.Module) -> None:
    (getattr(model, "activation_checkpointing_disable", None) or model.gradient_checkpointing_disable)()


def perp_retrain(model: nn.Module, windows: torch.Tensor, config: PERPConfig | None = None, *,
                 device: str | torch.device = "cpu", progress: bool = True,
                 masks: ModuleMasks | None = None) -> dict[str, Any]:
    """Retrain ``model`` in place on ``windows`` (n × seqlen token ids); returns a summary:
    {steps, tokens, seconds, tokens_per_s, loss_first, loss_last, losses (per step), trainable_params}.

    Raises ValueError on bad settings/empty data; RecoveryError (a FloatingPointError) on a
    non-finite loss, with the model restored to its state before retraining.
    """
    config = config or PERPConfig()
    config.validate()
    check_windows(windows)
    device = torch.device(device)
    model.to(device)
    linears = get_adapter(model).named_linears(model)
    masks = weight_masks(linears, masks)
    n = windows.shape[0]
    per_epoch = math.ceil(n / config.batch_size)
    total = config.steps if config.steps is not None else config.epochs * per_epoch
    gen = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)  # LoRA initialization
    losses: list[float] = []
    tokens = 0
    t0 = time.perf_counter()
    with frozen(model):
        base = list({id(p): p for p in norm_and_bias_params(model).values()}.values())
        if config.mode == "full":  # every kept weight of the prunable linears too, masked after each step
            base += [m.weight for m in linears.values() if all(m.weight is not p for p in base)]
        snap = snapshot(base)
        for p in base:
            p.requires_grad_(True)
        params = list(base)
        if config.mode in KINDS:
            params += attach_lora(linears, config.mode, config.r, config.alpha, masks)
        if not params:
            raise ValueError("the model has no biases or normalization parameters to train (use a LoRA mode)")
        ckpt = _set_checkpointing(model, config.grad_checkpointing)
        opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(total, config.warmup))
        bar = tqdm(total=total, desc=f"PERP ({config.mode})", disable=not progress)
        try:
            model.train()
            step = 0
            while step < total:
                perm = torch.randperm(n, generator=gen)
                for s in range(0, n, config.batch_size):
                    if step >= total:
                        break
                    batch = windows[perm[s : s + config.batch_size]].to(device)
                    loss = model(input_ids=batch, labels=batch, use_cache=False).loss
                    if not torch.isfinite(loss):
                        raise RecoveryError(f"PERP loss became {loss.item()} at step {step} (lr={config.lr}); "
                                            "the model was restored to its state before retraining")
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    if config.max_grad_norm is not None:
                        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
                    opt.step()
                    if config.mode == "full":
                        apply_masks(weights_of(linears), masks)
                    sched.step()
                    step += 1
                    tokens += batch.numel()
                    losses.append(loss.item())
                    el = time.perf_counter() - t0
                    bar.set_postfix(loss=f"{losses[-1]:.4f}", tok_s=f"{tokens / max(el, 1e-9):.0f}")
                    bar.update(1)
            with torch.no_grad():
                ok = all(torch.isfinite(p).all() for p in base) and all(
                    torch.isfinite(m.weight).all() for m in linears.values())
            if not ok:
                raise RecoveryError("PERP produced NaN/Inf parameters; the model was restored")
            merge_lora(linears, keep=True)
        except BaseException:
            merge_lora(linears, keep=False)
            restore(snap)
            raise
        finally:
            bar.close()
            if ckpt:
                _unset_checkpointing(model)
            for p in params:
                p.grad = None
        apply_masks(weights_of(linears), masks)
    seconds = time.perf_counter() - t0
    k = max(1, len(losses) // 10)
    return {
        "mode": config.mode,
        "steps": len(losses),
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_s": tokens / max(seconds, 1e-9),
        "loss_first": sum(losses[:k]) / k,
        "loss_last": sum(losses[-k:]) / k,
        "losses": losses,
        "trainable_params": sum(p.numel() for p in params),
        "config": config.to_dict(),
    }
