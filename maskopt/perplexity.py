"""Perplexity on non-overlapping windows (the WikiText-2 protocol of the pruning papers), and its stage."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .data import DataError, check_seqlen, context_length, eval_windows, read_texts, tokenize
from .resample import percentiles


def _check_windows(windows: torch.Tensor) -> None:
    if windows.ndim != 2 or windows.shape[0] == 0 or windows.shape[1] < 2:
        raise DataError(f"perplexity needs at least one window of ≥ 2 tokens, got shape {tuple(windows.shape)}")


def perplexity(model, windows: torch.Tensor, *, device: str | torch.device | None = None,
               batch_size: int = 4, progress: bool = True, desc: str = "perplexity") -> float:
    """exp(mean token negative log-likelihood) over windows (n × seqlen); each window is scored on its own
    (:func:`window_nlls`, summed in float64)."""
    return perplexity_from_nlls(*window_nlls(model, windows, device=device, batch_size=batch_size, progress=progress,
                                             desc=desc))


@torch.no_grad()
def window_nlls(model, windows: torch.Tensor, *, device: str | torch.device | None = None, batch_size: int = 4,
                progress: bool = True, desc: str = "nll") -> tuple[torch.Tensor, torch.Tensor]:
    """Per window: the summed token negative log-likelihood (float64) and the number of predicted tokens, so
    that perplexity = exp(Σ nll / Σ tokens) over any subset or resample of the windows (see
    :func:`bootstrap_perplexity`). Each window is scored on its own, as in :func:`perplexity`."""
    _check_windows(windows)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device)
    nlls = [_nll_sums(model, windows[i : i + batch_size].to(device))
            for i in tqdm(range(0, windows.shape[0], batch_size), desc=desc, disable=not progress)]
    return _finite(torch.cat(nlls), windows)


def _nll_sums(model, batch: torch.Tensor) -> torch.Tensor:
    """Summed token negative log-likelihood (float64, on the CPU) of every window of ``batch``."""
    logits = model(input_ids=batch, use_cache=False).logits.float()
    nll = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="none")
    return nll.view(batch.shape[0], -1).double().sum(1).cpu()


def _finite(nll: torch.Tensor, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-window NLL sums, predicted tokens per window), refused when a sum is NaN/Inf."""
    if not torch.isfinite(nll).all():
        raise FloatingPointError("perplexity is not finite: the model produces NaN/Inf logits")
    return nll, torch.full_like(nll, float(windows.shape[1] - 1))


class _Feed(torch.nn.Module):
    """Stands in for the decoder blocks on the model's last pass: returns the precomputed output of the last block."""

    def __init__(self, hidden: torch.Tensor, as_tuple: bool):
        super().__init__()
        self.hidden, self.as_tuple = hidden, as_tuple

    def forward(self, *_args, **_kwargs):
        return (self.hidden,) if self.as_tuple else self.hidden


@torch.no_grad()
def streamed_window_nlls(stream, windows: torch.Tensor, *, device: str | torch.device = "cpu", batch_size: int = 4,
                         progress: bool = True, desc: str = "nll") -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`window_nlls` of a :class:`~maskopt.model.streaming.StreamedModel`: every window goes through one
    decoder block at a time (read from the checkpoint, then given back), then through the model's own head (final
    norm, lm_head) with the blocks replaced by the stored hidden states. Memory: one block + the windows' hidden
    states; the numbers equal the in-memory model's."""
    from .model.calibrate import block_output, capture_block_inputs, move_non_blocks, to_device  # noqa: PLC0415
    from .model.adapters.base import get_submodule  # noqa: PLC0415

    _check_windows(windows)
    model, adapter, device = stream.model, stream.adapter, torch.device(device)
    stream.load_non_blocks()
    move_non_blocks(model, adapter, device)
    batches = capture_block_inputs(model, adapter, windows, device, batch_size, "cpu")
    stream.drop_non_blocks()  # the blocks need only their inputs; the head is read again for the last pass
    blocks = adapter.get_blocks(model)
    as_tuple = False
    for i in tqdm(range(len(blocks)), desc=desc, disable=not progress, unit="block"):
        block = stream.load(i).to(device)
        for b in batches:
            out = block(b.hidden.to(device), *to_device(b.args, device), **to_device(b.kwargs, device))
            as_tuple = isinstance(out, (tuple, list))
            b.hidden = block_output(out).to("cpu")
        block.to("cpu")
        stream.release(i)
    stream.load_non_blocks()
    move_non_blocks(model, adapter, device)
    parent_path, _, attr = adapter.blocks.rpartition(".")
    parent = get_submodule(model, parent_path)
    nlls = []
    try:
        for k, b in enumerate(batches):
            setattr(parent, attr, torch.nn.ModuleList([_Feed(b.hidden.to(device), as_tuple)]))
            nlls.append(_nll_sums(model, windows[k * batch_size : (k + 1) * batch_size].to(device)))
    finally:
        setattr(parent, attr, blocks)
    return _finite(torch.cat(nlls), windows)


def perplexity_from_nlls(nll, tokens) -> float:
    """exp(Σ nll / Σ tokens) of per-window sums (:func:`window_nlls`)."""
    nll, tokens = torch.as_tensor(nll, dtype=torch.float64), torch.as_tensor(tokens, dtype=torch.float64)
    return math.exp(float(nll.sum() / tokens.sum()))


def _resample(n: int, n_boot: int, seed: int) -> torch.Tensor:
    """n_boot × n window indices drawn with replacement (deterministic for a seed)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, n, (n_boot, n), generator=gen)


def bootstrap_perplexity(nll, tokens, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the perplexity over windows: the windows are resampled with replacement
    ``n_boot`` times and exp(Σ nll / Σ tokens) computed on each resample. Windows are the unit (tokens within a
    window are not independent)."""
    nll, tokens = torch.as_tensor(nll, dtype=torch.float64), torch.as_tensor(tokens, dtype=torch.float64)
    if nll.ndim != 1 or nll.shape != tokens.shape or nll.numel() == 0:
        raise ValueError(f"need equal 1-D per-window nll and token counts, got {tuple(nll.shape)} and {tuple(tokens.shape)}")
    idx = _resample(nll.numel(), n_boot, seed)
    return percentiles(torch.exp(nll[idx].sum(1) / tokens[idx].sum(1)), level)


def paired_bootstrap(nll_a, nll_b, tokens, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> dict:
    """Model A against model B on the same windows: the difference ppl_A − ppl_B and the ratio ppl_A / ppl_B with
    percentile intervals from resampling the windows jointly (both models see the same resample), and the share
    of resamples in which A is better (lower). "A is better" needs the whole difference interval below 0."""
    a, b = torch.as_tensor(nll_a, dtype=torch.float64), torch.as_tensor(nll_b, dtype=torch.float64)
    t = torch.as_tensor(tokens, dtype=torch.float64)
    if a.shape != b.shape or a.shape != t.shape or a.ndim != 1 or a.numel() == 0:
        raise ValueError(f"paired comparison needs the same windows: shapes {tuple(a.shape)}, {tuple(b.shape)}, {tuple(t.shape)}")
    idx = _resample(a.numel(), n_boot, seed)
    tok = t[idx].sum(1)
    pa, pb = torch.exp(a[idx].sum(1) / tok), torch.exp(b[idx].sum(1) / tok)
    ppl_a, ppl_b = perplexity_from_nlls(a, t), perplexity_from_nlls(b, t)
    d_lo, d_hi = percentiles(pa - pb, level)
    r_lo, r_hi = percentiles(pa / pb, level)
    return {"ppl_a": ppl_a, "ppl_b": ppl_b, "diff": ppl_a - ppl_b, "diff_lo": d_lo, "diff_hi": d_hi,
            "ratio": ppl_a / ppl_b, "ratio_lo": r_lo, "ratio_hi": r_hi, "p_a_better": float((pa < pb).double().mean()),
            "windows": int(a.numel()), "level": level}


def pipeline_perplexity(nlls_a: Sequence[Sequence[float]], nlls_b: Sequence[Sequence[float]], tokens, *,
                        paired_prunings: bool = False, n_boot: int = 2000, level: float = 0.95,
                        seed: int = 0) -> dict:
    """Pipeline A against pipeline B, each pruned several times: a pipeline's perplexity is the mean over its
    prunings of each one's perplexity on the same windows; Δ = A − B and the ratio A / B with a two-level bootstrap
    (the windows resampled jointly for every model, each side's prunings drawn with replacement — one draw for both
    sides when ``paired_prunings``), so the interval carries the spread between prunings as well as the windows."""
    from .resample import pruning_weights  # noqa: PLC0415

    a = torch.as_tensor([list(x) for x in nlls_a], dtype=torch.float64)
    b = torch.as_tensor([list(x) for x in nlls_b], dtype=torch.float64)
    t = torch.as_tensor(tokens, dtype=torch.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != t.numel() or b.shape[1] != t.numel() or t.numel() == 0:
        raise ValueError(f"every pruning needs NLL on the same windows: shapes {tuple(a.shape)}, {tuple(b.shape)}, "
                         f"{tuple(t.shape)}")
    wa, wb = pruning_weights(a.shape[0], b.shape[0], n_boot, torch.Generator().manual_seed(seed + 1), paired_prunings)
    idx = _resample(t.numel(), n_boot, seed)
    tok = t[idx].sum(1)
    pa, pb = torch.exp(a[:, idx].sum(-1) / tok), torch.exp(b[:, idx].sum(-1) / tok)  # prunings × n_boot
    ra, rb = (wa * pa.T).sum(1), (wb * pb.T).sum(1)
    per_a = [perplexity_from_nlls(x, t) for x in a]
    per_b = [perplexity_from_nlls(x, t) for x in b]
    ppl_a, ppl_b = sum(per_a) / len(per_a), sum(per_b) / len(per_b)
    d_lo, d_hi = percentiles(ra - rb, level)
    r_lo, r_hi = percentiles(ra / rb, level)
    return {"ppl_a": ppl_a, "ppl_b": ppl_b, "per_pruning_a": per_a, "per_pruning_b": per_b, "diff": ppl_a - ppl_b,
            "diff_lo": d_lo, "diff_hi": d_hi, "ratio": ppl_a / ppl_b, "ratio_lo": r_lo, "ratio_hi": r_hi,
            "p_a_better": float((ra < rb).double().mean()), "windows": int(t.numel()),
            "paired_prunings": paired_prunings, "level": level}


def check_max_windows(max_windows: int | None) -> int | None:
    """None or 0: the whole text; ≥ 1: a cap on windows per text; negative: an error."""
    if max_windows is None or max_windows == 0:
        return None
    if max_windows < 0:
        raise ValueError(f"--max-windows must be ≥ 1 (or 0 for the whole text), got {max_windows}")
    return max_windows


def short_name(text: str | Path) -> str:
    p = Path(text)
    return f"{p.parent.name}/{p.name}" if p.parent.name else p.name


def evaluate_texts(model, tokenizer, texts: Sequence[str | Path], *, seqlen: int | None = None,
                   max_windows: int | None = None, batch_size: int = 4, device=None, progress: bool = True,
                   label: str = "", stream=None) -> dict[str, float]:
    """Perplexity per text file, windows of min(context, 2048) tokens unless ``seqlen`` is given; ``stream``: the
    :class:`~maskopt.model.streaming.StreamedModel` whose skeleton ``model`` is (one block in memory at a time)."""
    check_seqlen(model, seqlen)
    max_windows = check_max_windows(max_windows)
    seqlen = seqlen or context_length(model)
    out = {}
    for text in texts:
        ids = tokenize(tokenizer, read_texts(text))
        windows, desc = eval_windows(ids, seqlen, max_windows), f"{label} ppl {short_name(text)}".strip()
        if stream is not None:
            nll, tokens = streamed_window_nlls(stream, windows, device=device or "cpu", batch_size=batch_size,
                                               progress=progress, desc=desc)
            out[short_name(text)] = perplexity_from_nlls(nll, tokens)
        else:
            out[short_name(text)] = perplexity(model, windows, device=device, batch_size=batch_size,
                                               progress=progress, desc=desc)
    return out


def cache_dir() -> Path:
    """Where maskopt keeps small caches (dense perplexities): $MASKOPT_CACHE or ~/.cache/maskopt."""
    return Path(os.environ.get("MASKOPT_CACHE") or Path.home() / ".cache" / "maskopt")


CACHE_VERSION = "ppl-v3"  # change when the text → windows → perplexity protocol changes (v3: float64 sums)


class PerplexityCache:
    """Perplexities by (weights digest, text digest, window settings, device type, dtype): a dense model is
    evaluated once, not before every pruning run."""

    def __init__(self, path: Path | None = None):
        self.path = path or cache_dir() / "perplexity.json"

    def _load(self) -> dict[str, float]:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    @staticmethod
    def key(model, text: str | Path, seqlen: int | None, max_windows: int | None, device) -> str:
        from .io import file_digest, tensor_digest  # noqa: PLC0415

        p = Path(text)
        text_id = file_digest(p) if p.is_file() else str(text)
        dtype = next(model.parameters()).dtype
        return "|".join([CACHE_VERSION, tensor_digest(model.state_dict().items()), text_id, str(seqlen), str(max_windows),
                         torch.device(device).type if device is not None else "default", str(dtype)])

    def get(self, key: str) -> float | None:
        return self._load().get(key)

    def put(self, key: str, value: float) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            data = self._load()
            data[key] = value
            tmp = self.path.with_name(self.path.name + f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data))
            os.replace(tmp, self.path)
        except OSError:
            pass  # a cache that cannot be written only costs time
