"""lm-eval's ``HFLM`` with each distinct context run once: multiple-choice loglikelihoods on cached keys/values.

A multiple-choice document asks for log p(cont_i | ctx) of every choice i with the same context. ``HFLM`` runs
``ctx + cont_i`` once per choice; here the context runs once (keeping its keys/values and only its last logits) and
the choices run together on that cache:

    log p(cont | ctx) = log p(cont[0] | ctx) + Σ_{j≥1} log p(cont[j] | ctx, cont[:j]),

the first term from the context's last position, the others from the choices' pass. Contexts of one length with
as many choices run as one batch (``batch_size`` contexts at a time). The same tokens, positions and
causal attention as ``HFLM``'s pass, so the same numbers up to floating-point rounding; greedy = every token the
argmax, as in ``HFLM``. Requests longer than the model's window, and non-causal models, go to ``HFLM`` unchanged.
"""
from __future__ import annotations

import inspect
import warnings
from functools import cached_property

import torch
import torch.nn.functional as F
from lm_eval.models.huggingface import HFLM
from tqdm import tqdm

Request = tuple[tuple[str, str], list[int], list[int]]


class _NoSharableCache(RuntimeError):
    """The model's cache cannot be repeated per choice (not a transformers DynamicCache)."""


class SharedContextLM(HFLM):
    """``HFLM`` whose ``_loglikelihood_tokens`` groups requests by context tokens (see the module docstring)."""

    def _loglikelihood_tokens(self, requests: list[Request], disable_tqdm: bool = False,
                              override_bs: int | None = None) -> list[tuple[float, bool]]:
        if self.backend != "causal":
            return super()._loglikelihood_tokens(requests, disable_tqdm, override_bs)
        try:
            return self._shared(requests, disable_tqdm, override_bs)
        except _NoSharableCache as e:
            warnings.warn(f"{e}: every request runs with its context again (lm-eval's HFLM)", stacklevel=2)
            return super()._loglikelihood_tokens(requests, disable_tqdm, override_bs)

    def _shared(self, requests: list[Request], disable_tqdm: bool, override_bs: int | None):
        res: list[tuple[float, bool] | None] = [None] * len(requests)
        long = [i for i, (_, ctx, cont) in enumerate(requests) if len(ctx) + len(cont) > self.max_length + 1]
        if long:  # HFLM's left truncation
            for i, ans in zip(long, super()._loglikelihood_tokens([requests[i] for i in long], disable_tqdm,
                                                                 override_bs), strict=True):
                res[i] = ans
        groups: dict[tuple[int, ...], list[int]] = {}
        skip = set(long)
        for i, (_, ctx, cont) in enumerate(requests):
            if i not in skip:
                assert len(ctx) > 0 and len(cont) > 0
                groups.setdefault(tuple(ctx), []).append(i)
        # contexts of one length with as many choices batch together (one cache of one length for all)
        buckets: dict[tuple[int, int], list[tuple[int, ...]]] = {}
        for ctx, idx in groups.items():
            buckets.setdefault((len(ctx), len(idx)), []).append(ctx)
        size = self.batch_size if isinstance(self.batch_size, int) and self.batch_size > 0 else 8
        pbar = tqdm(total=len(requests) - len(long), disable=disable_tqdm or self.rank != 0,
                    desc="Running loglikelihood requests (shared contexts)")
        for key in sorted(buckets, reverse=True):
            ctxs = sorted(buckets[key], key=lambda c: max(len(requests[i][2]) for i in groups[c]))
            for b in range(0, len(ctxs), size):
                chunk = ctxs[b:b + size]
                idx = [i for c in chunk for i in groups[c]]
                answers = self._score_batch([list(c) for c in chunk], [requests[i][2] for i in idx])
                for i, ans in zip(idx, answers, strict=True):
                    res[i] = ans
                    if requests[i][0] is not None:
                        self.cache_hook.add_partial("loglikelihood", requests[i][0], ans)
                pbar.update(len(idx))
        pbar.close()
        return res  # type: ignore[return-value]

    @cached_property
    def _forward_args(self) -> set[str]:
        """Names of the model's forward arguments (read once: the scoring loop asks for every batch)."""
        try:
            return set(inspect.signature(self.model.forward).parameters)
        except (TypeError, ValueError):
            return set()

    def _forward(self, ids: torch.Tensor, past=None, last_only: bool = False):
        kw = {"logits_to_keep": 1} if last_only and "logits_to_keep" in self._forward_args else {}
        kw["cache" if "cache" in self._forward_args else "past_key_values"] = past  # transformers ≥ 5.2x: cache
        with torch.no_grad(), torch.autocast(device_type=self.device.type, dtype=self.mixed_precision_dtype,
                                             enabled=self.mixed_precision_dtype is not None):
            return self.model(input_ids=ids, use_cache=True, **kw)

    def _score_batch(self, ctxs: list[list[int]], conts: list[list[int]]) -> list[tuple[float, bool]]:
        """(log p(cont | ctx), greedy) of each continuation: ``ctxs`` of one length, each followed by the same
        number n of continuations in ``conts`` (context k's are conts[k n : (k + 1) n])."""
        n = len(conts) // len(ctxs)
        out = self._forward(torch.tensor(ctxs, dtype=torch.long, device=self.device), last_only=True)
        first = F.log_softmax(out.logits[:, -1], dim=-1, dtype=self.softmax_dtype)  # predicts each cont[0]
        rest_len = max(len(c) for c in conts) - 1
        rest = None
        if rest_len > 0:  # every continuation but its last token, right-padded, on its context's cache
            cache = out.cache if getattr(out, "cache", None) is not None else getattr(out, "past_key_values", None)
            if not hasattr(cache, "batch_repeat_interleave"):
                raise _NoSharableCache(f"{type(self.model).__name__} returns a {type(cache).__name__} cache")
            cache.batch_repeat_interleave(n)
            pad = torch.zeros(len(conts), rest_len, dtype=torch.long, device=self.device)
            for k, c in enumerate(conts):
                pad[k, :len(c) - 1] = torch.tensor(c[:-1], dtype=torch.long)
            rest = F.log_softmax(self._forward(pad, past=cache).logits, dim=-1, dtype=self.softmax_dtype)
        answers = []
        for k, c in enumerate(conts):
            head = first[k // n]
            lp = head[c[0]]
            greedy = bool(head.argmax() == c[0])
            if len(c) > 1:
                rows = rest[k, :len(c) - 1]
                toks = torch.tensor(c[1:], dtype=torch.long, device=rows.device)
                lp = lp + rows.gather(1, toks[:, None]).sum()
                greedy = greedy and bool((rows.argmax(-1) == toks).all())
            answers.append((float(lp), greedy))
        return answers

