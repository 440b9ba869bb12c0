"""Perplexity on non-overlapping windows (the WikiText-2 protocol of the pruning papers)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm


@torch.no_grad()
def perplexity(model, windows: torch.Tensor, *, device: str | torch.device | None = None,
               batch_size: int = 4, progress: bool = True, desc: str = "perplexity") -> float:
    """exp(mean token negative log-likelihood) over windows (n × seqlen); each window is scored on its own."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device)
    total_nll, total_tokens = 0.0, 0
    for i in tqdm(range(0, windows.shape[0], batch_size), desc=desc, disable=not progress):
        batch = windows[i : i + batch_size].to(device)
        logits = model(input_ids=batch, use_cache=False).logits.float()
        nll = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="sum")
        total_nll += float(nll)
        total_tokens += batch[:, 1:].numel()
    ppl = math.exp(total_nll / total_tokens)
    if not math.isfinite(ppl):
        raise FloatingPointError("perplexity is not finite: the model produces NaN/Inf logits")
    return ppl
