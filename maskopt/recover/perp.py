"""PERP: parameter-efficient retraining after pruning (Zimmer et al., "PERP: Rethinking the
Prune-Retrain Paradigm in the Era of LLMs").

Mode 'full' is the baseline PERP is compared with: all kept weights of the prunable linears (plus
norms and biases) trained on the same loss and token budget, the mask re-applied after every step.
Otherwise only a small set of parameters is trained with the language-modelling loss
L = −(1/T) Σ_t log p(x_{t+1} | x_≤t) — or, with ``loss='kd'``, the distillation loss
L = (τ²/T) Σ_t KL(p_dense(·|x_≤t; τ) ‖ p(·|x_≤t; τ)) — : all biases and normalization parameters, plus (optionally)
sparsity-keeping LoRA factors on every prunable linear, merged back at the end. The weights
themselves are frozen, so the mask M (explicit, or W ≠ 0 when none is given) cannot change.
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


def hidden_loss(student: tuple[torch.Tensor, ...], teacher: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """(1/L) Σ_l mean_t ‖h_l − h*_l‖² / ‖h*_l‖² over the L block outputs (``hidden_states[1:]``, each B × T × d; in
    transformers the last one is taken after the final norm), per token relative to the dense model's so that the
    few tokens with huge activations do not dominate."""
    if len(student) != len(teacher):
        raise ValueError(f"student has {len(student)} hidden states, the dense model {len(teacher)}")
    terms = [((s.float() - t.float()).pow(2).sum(-1) / t.float().pow(2).sum(-1).clamp_min(1e-12)).mean()
             for s, t in zip(student[1:], teacher[1:])]
    return torch.stack(terms).mean()


def batch_loss(model: nn.Module, batch: torch.Tensor, config: PERPConfig, teacher: nn.Module | None = None) -> torch.Tensor:
    """The training loss of one batch of token ids: next-token cross-entropy ('lm'), or the mean over tokens of
    τ² · KL(p_teacher ‖ p_model) at temperature τ ('kd'), mixed with the LM loss by ``lm_weight``, plus
    ``hidden_weight`` · :func:`hidden_loss` of the block outputs."""
    if config.loss == "lm":
        return model(input_ids=batch, labels=batch, use_cache=False).loss
    tau = config.temperature
    hid = bool(config.hidden_weight)
    with torch.no_grad():
        t_out = teacher(input_ids=batch, use_cache=False, output_hidden_states=hid)
        t_logp = F.log_softmax(t_out.logits.float() / tau, -1)
    out = model(input_ids=batch, labels=batch if config.lm_weight else None, use_cache=False, output_hidden_states=hid)
    s_logp = F.log_softmax(out.logits.float() / tau, -1)
    kd = (t_logp.exp() * (t_logp - s_logp)).sum(-1).mean() * tau**2
    loss = kd if not config.lm_weight else (1 - config.lm_weight) * kd + config.lm_weight * out.loss
    return loss + config.hidden_weight * hidden_loss(out.hidden_states, t_out.hidden_states) if hid else loss


def perp_retrain(model: nn.Module, windows: torch.Tensor, config: PERPConfig | None = None, *,
                 device: str | torch.device = "cpu", progress: bool = True,
                 masks: ModuleMasks | None = None, teacher: nn.Module | None = None) -> dict[str, Any]:
    """Retrain ``model`` in place on ``windows`` (n × seqlen token ids); returns a summary:
    {steps, tokens, seconds, tokens_per_s, loss_first, loss_last, losses (per step), trainable_params}.
    ``teacher``: the dense model, for ``config.loss == 'kd'`` (never changed).

    Raises ValueError on bad settings/empty data; RecoveryError (a FloatingPointError) on a
    non-finite loss, with the model restored to its state before retraining.
    """
    config = config or PERPConfig()
    config.validate()
    check_windows(windows)
    if config.loss == "kd" and teacher is None:
        raise ValueError("loss='kd' distils from the dense model: none was given")
    if teacher is not None and teacher is model:
        raise ValueError("the teacher is the model being retrained")
    device = torch.device(device)
    model.to(device)
    if config.loss == "kd":
        teacher.to(device)
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
    with frozen(model, *([teacher] if config.loss == "kd" else [])):
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
                    opt.zero_grad(set_to_none=True)
                    loss = 0.0
                    for mb in batch.split(config.micro_batch or batch.shape[0]):  # gradients accumulated
                        part = batch_loss(model, mb, config, teacher) * (mb.shape[0] / batch.shape[0])
                        if not torch.isfinite(part):
                            raise RecoveryError(f"PERP loss became {part.item()} at step {step} (lr={config.lr}); "
                                                "the model was restored to its state before retraining")
                        part.backward()
                        loss += part.item()
                    if config.max_grad_norm is not None:
                        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
                    opt.step()
                    if config.mode == "full":
                        apply_masks(weights_of(linears), masks)
                    sched.step()
                    step += 1
                    tokens += batch.numel()
                    losses.append(loss)
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
