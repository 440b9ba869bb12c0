"""Model soups of sparse models (Zimmer, Spiegel, Pokutta, "Sparse Model Soups", ICLR 2024).

Ingredients θ_1 … θ_m retrained from one pruned model share its mask M, so their average keeps
it: (1/m) Σ_i θ_i ⊙ M = ((1/m) Σ_i θ_i) ⊙ M.
    uniform soup  θ = (1/m) Σ_i θ_i
    greedy soup   sort the ingredients by their validation metric, best first; start with the best and
                  add the next one whenever the soup's validation metric does not get worse
                  (Wortsman et al. 2022); the result is the uniform soup of the chosen ones.
Ingredients whose masks differ are refused (MaskMismatchError): their average would be denser.
"""
from __future__ import annotations

from typing import Callable, Iterable, Mapping, Sequence

import torch

from .errors import MaskMismatchError

State = Mapping[str, torch.Tensor]


def check_masks(states: Sequence[State], names: Iterable[str], masks: Mapping[str, torch.Tensor] | None = None
                ) -> dict[str, torch.Tensor]:
    """The shared mask of the prunable tensors ``names``; MaskMismatchError if an ingredient breaks it.

    With ``masks`` given, every ingredient must be zero wherever M = 0; without, all ingredients must
    have the same support (W ≠ 0) as the first.
    """
    if not states:
        raise MaskMismatchError("a soup needs at least one ingredient")
    names = list(names)
    ref = {n: (masks[n].bool() if masks is not None else states[0][n] != 0) for n in names}
    for i, st in enumerate(states):
        for n in names:
            if n not in st:
                raise MaskMismatchError(f"ingredient {i} has no tensor {n!r}")
            w = st[n]
            if tuple(w.shape) != tuple(ref[n].shape):
                raise MaskMismatchError(f"ingredient {i}: {n} has shape {tuple(w.shape)}, expected "
                                        f"{tuple(ref[n].shape)}")
            nz = w != 0
            bad = int((nz & ~ref[n].to(nz.device)).sum()) if masks is not None else int((nz != ref[n]).sum())
            if bad:
                what = "nonzero where the mask prunes" if masks is not None else "differing from ingredient 0"
                raise MaskMismatchError(f"ingredient {i} does not share the mask: {bad} entries of {n} are {what}; "
                                        "only copies retrained from the same pruned model can be averaged")
    return ref


def uniform_soup(states: Sequence[State]) -> dict[str, torch.Tensor]:
    """Entry-wise mean of floating tensors (in float64, cast back); other tensors must agree and are copied."""
    if not states:
        raise MaskMismatchError("a soup needs at least one ingredient")
    keys = list(states[0].keys())
    for i, st in enumerate(states[1:], 1):
        if list(st.keys()) != keys:
            raise MaskMismatchError(f"ingredient {i} has different tensors than ingredient 0")
    out = {}
    for k in keys:
        ts = [st[k] for st in states]
        if ts[0].is_floating_point():
            out[k] = (sum(t.double() for t in ts) / len(ts)).to(ts[0].dtype)
        else:
            if not all(torch.equal(t, ts[0]) for t in ts):
                raise MaskMismatchError(f"non-floating tensor {k!r} differs between ingredients")
            out[k] = ts[0].clone()
    return out


def assert_mask_preserved(state: State, masks: Mapping[str, torch.Tensor]) -> None:
    """MaskMismatchError unless the soup is zero wherever the mask prunes."""
    check_masks([state], masks.keys(), masks)


def greedy_soup(states: Sequence[State], score: Callable[[State], float], higher_is_better: bool = True,
                scores: Sequence[float] | None = None) -> tuple[dict[str, torch.Tensor], list[int], float]:
    """(soup, indices of the chosen ingredients in the order added, the soup's score).

    ``score`` evaluates a state on held-out (validation) data; ``scores`` are the ingredients' own
    scores if already known.
    """
    ind = list(scores) if scores is not None else [score(s) for s in states]
    sign = 1.0 if higher_is_better else -1.0
    order = sorted(range(len(states)), key=lambda i: (-sign * ind[i], i))
    chosen, best = [order[0]], ind[order[0]]
    for i in order[1:]:
        cand = score(uniform_soup([states[j] for j in chosen + [i]]))
        if sign * cand >= sign * best:
            chosen.append(i)
            best = cand
    return uniform_soup([states[j] for j in chosen]), chosen, best
