"""Sparsity patterns as constraint sets.

Every pattern splits a (rows × d) mask into disjoint *groups* that each keep the
same number of weights: one group for the whole matrix (unstructured), one per
row (per-row), or one per block of M consecutive inputs of a row (N:M).
Solvers work on the grouped view ``(n_groups, group_size)``; a top-k inside each
group is the linear minimization oracle and the rounding of every method.

``cs256`` (the constraint of the CS256 storage format, docs/cs256.md) keeps the same count k in
every row, like per-row, and in addition every *tile* of 256 consecutive inputs of a row keeps a
multiple of g weights (g = 8 by default; ``cs256:16`` sets g = 16); k is the per-row count rounded
to the nearest multiple of g. Its top-k is a chunk greedy (see :func:`tile_chunk_topk`), exact for
linear objectives, so it is the LMO and the rounding of every method as well.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch

KINDS = ("unstructured", "per_row", "nm", "cs256")
TILE = 256  # CS256 tile width: in-tile positions fit one byte


class PatternError(ValueError):
    """A sparsity pattern or sparsity level that cannot be satisfied."""


@dataclass(frozen=True)
class Pattern:
    kind: str = "per_row"
    n: int = 0  # N:M keeps n of every m consecutive inputs
    m: int = 0
    g: int = 0  # cs256: every tile of TILE inputs keeps a multiple of g

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise PatternError(f"unknown pattern kind {self.kind!r}; expected one of {KINDS}")
        if self.kind == "nm" and not (0 < self.n < self.m):
            raise PatternError(f"N:M pattern needs 0 < N < M, got {self.n}:{self.m}")
        if self.kind == "cs256" and not (2 <= self.g <= TILE and TILE % self.g == 0):
            raise PatternError(f"cs256 group size must divide {TILE} and be ≥ 2 (count/g fits one byte), got {self.g}")

    @staticmethod
    def parse(text: str | "Pattern") -> "Pattern":
        """'unstructured', 'per_row' (or 'per-row', 'row'), 'N:M' such as '2:4', 'cs256' or 'cs256:G'."""
        if isinstance(text, Pattern):
            return text
        t = str(text).strip().lower().replace("-", "_")
        if t in ("unstructured", "matrix", "layer"):
            return Pattern("unstructured")
        if t in ("per_row", "row", "perrow"):
            return Pattern("per_row")
        mc = re.fullmatch(r"cs256(?:\s*:\s*(\d+))?", t)
        if mc:
            return Pattern("cs256", g=int(mc.group(1) or 8))
        mt = re.fullmatch(r"(\d+)\s*:\s*(\d+)", t)
        if mt:
            return Pattern("nm", int(mt.group(1)), int(mt.group(2)))
        raise PatternError(
            f"invalid pattern {text!r}: use 'unstructured', 'per_row', 'N:M' with 0 < N < M (e.g. 2:4, 4:8), "
            "or 'cs256' / 'cs256:G'"
        )

    def __str__(self) -> str:
        if self.kind == "cs256":
            return "cs256" if self.g == 8 else f"cs256:{self.g}"
        return f"{self.n}:{self.m}" if self.kind == "nm" else self.kind

    @property
    def rowwise(self) -> bool:
        """True when every row is an independent problem (per-row and N:M)."""
        return self.kind != "unstructured"

    # ---- shapes -----------------------------------------------------------------
    def group_shape(self, rows: int, d: int) -> tuple[int, int]:
        if self.kind == "unstructured":
            return 1, rows * d
        if self.kind in ("per_row", "cs256"):
            return rows, d
        if d % self.m:
            raise PatternError(f"N:M pattern {self} needs the input dimension ({d}) divisible by {self.m}")
        return rows * (d // self.m), self.m

    def to_groups(self, x: torch.Tensor) -> torch.Tensor:
        """(rows, d) → (n_groups, group_size) view (no copy for contiguous x)."""
        return x.reshape(self.group_shape(*x.shape[-2:]))

    def from_groups(self, x: torch.Tensor, rows: int, d: int) -> torch.Tensor:
        return x.reshape(rows, d)

    def keep_per_group(self, rows: int, d: int, sparsity: float) -> int:
        """Number of weights each group keeps. Pruned count is ⌊sparsity·size⌋ (Wanda/SparseGPT convention)."""
        if self.kind == "nm":
            self.group_shape(rows, d)  # validates that M divides d
            return self.n
        check_sparsity(sparsity)
        _, size = self.group_shape(rows, d)
        keep = size - int(sparsity * size)
        if self.kind == "cs256":
            wanted = keep
            keep = min(self.g * int(keep / self.g + 0.5), tile_capacity(d, self.g))
            if keep == 0 and wanted > 0:
                raise PatternError(
                    f"cs256 keeps a multiple of g={self.g} weights per row: at sparsity {sparsity} a row of {d} inputs "
                    f"would keep {wanted}, rounded to 0, and the whole layer would be zeroed. The highest sparsity "
                    f"that keeps one group of a row of {d} is {1 - (self.g / 2) / d:.4f} (use a lower --sparsity, "
                    f"or a smaller g with --pattern cs256:G)")
        return keep

    def round_keep(self, keep: int) -> int:
        """The largest count ≤ ``keep`` that a group can keep (multiples of g for cs256; for fixings)."""
        return keep - keep % self.g if self.kind == "cs256" else keep

    def sparsity_of(self, rows: int, d: int, sparsity: float) -> float:
        """The actual fraction of zeros the pattern produces."""
        n_groups, size = self.group_shape(rows, d)
        return 1.0 - self.keep_per_group(rows, d, sparsity) / size

    # ---- oracles ------------------------------------------------------------------
    def topk_mask(self, scores: torch.Tensor, keep: int) -> torch.Tensor:
        """Boolean mask keeping the ``keep`` highest scores in every group.

        Ties are broken deterministically towards the lower index (stable sort),
        so equal scores (common on quantized weights) give the same mask on every run.
        """
        rows, d = scores.shape
        if self.kind == "cs256":
            return tile_chunk_topk(scores, keep, self.g)
        g = self.to_groups(scores)
        mask = torch.zeros_like(g, dtype=torch.bool)
        if keep > 0:
            idx = torch.argsort(g, dim=1, descending=True, stable=True)[:, :keep]
            mask.scatter_(1, idx, True)
        return self.from_groups(mask, rows, d)

    def counts_ok(self, mask: torch.Tensor, keep: int) -> bool:
        """True when every group of ``mask`` keeps exactly ``keep`` entries (and, for cs256, every tile a multiple of g)."""
        ok = bool((self.to_groups(mask.to(torch.int64)).sum(1) == keep).all())
        if ok and self.kind == "cs256":
            ok = bool((tile_counts(mask) % self.g == 0).all())
        return ok

    def same_block(self, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor | None:
        """For N:M / cs256, whether inputs i and j share a block / tile (swaps must stay inside); else None."""
        if self.kind == "nm":
            return (i // self.m) == (j // self.m)
        if self.kind == "cs256":
            return (i // TILE) == (j // TILE)
        return None


def check_sparsity(sparsity: float) -> float:
    if not (isinstance(sparsity, (int, float)) and 0.0 <= float(sparsity) < 1.0) or sparsity != sparsity:
        raise PatternError(f"sparsity must be in [0, 1), got {sparsity!r}")
    return float(sparsity)


# ---- cs256 tiles ----------------------------------------------------------------------
def n_tiles(d: int) -> int:
    return -(-d // TILE)


def tile_counts(mask: torch.Tensor) -> torch.Tensor:
    """(rows, n_tiles) number of kept entries per tile of TILE consecutive inputs (last tile may be short)."""
    rows, d = mask.shape
    padded = torch.nn.functional.pad(mask.to(torch.int32), (0, n_tiles(d) * TILE - d))
    return padded.reshape(rows, -1, TILE).sum(-1)


def tile_capacity(d: int, g: int) -> int:
    """Most entries a row of width d can keep under cs256: ⌊width/g⌋·g per tile."""
    full, last = divmod(d, TILE)
    return full * TILE + (last - last % g)


def tile_chunk_topk(scores: torch.Tensor, keep: int, g: int) -> torch.Tensor:
    """Mask maximizing Σ scores over masks with ``keep`` per row and a multiple of g per tile.

    In every tile sort the scores (descending); a tile keeping c = j·g entries keeps its top c, worth
    the prefix sum V(c). V is concave in j (the chunk sums Δ_j of g consecutive sorted scores never
    increase), so the best allocation of keep/g chunks over the tiles of a row takes the keep/g
    largest chunk sums of the row (separable concave allocation: greedy is exact). Ties: stable,
    towards lower tiles and lower indices. ``+inf`` scores (fixed ones) are always taken, ``-inf``
    (fixed zeros, padding) never unless the budget forces it, which raises :class:`PatternError`.
    """
    rows, d = scores.shape
    if keep % g:
        raise PatternError(f"cs256 keeps a multiple of g={g} per row, got keep={keep}")
    if keep > tile_capacity(d, g):
        raise PatternError(f"cs256 with g={g}: a row of {d} inputs can keep at most {tile_capacity(d, g)}, not {keep}")
    T = n_tiles(d)
    s = torch.nn.functional.pad(scores, (0, T * TILE - d), value=float("-inf")).reshape(rows, T, TILE)
    srt, order = torch.sort(s, dim=-1, descending=True, stable=True)
    # chunk keys: the sum, with +inf entries counted separately so that mixed chunks stay ordered
    n_pos = torch.isposinf(srt).reshape(rows, T, TILE // g, g).sum(-1)
    n_neg = torch.isneginf(srt).reshape(rows, T, TILE // g, g).sum(-1)
    finite = srt.masked_fill(~torch.isfinite(srt), 0.0).reshape(rows, T, TILE // g, g).sum(-1)
    key = torch.where(n_pos > 0, torch.full_like(finite, float("inf")), finite)
    key = torch.where(n_neg > 0, torch.full_like(finite, float("-inf")), key)
    if bool(((n_pos > 0) & (n_neg > 0)).any()):
        raise PatternError("cs256: a tile's fixed ones cannot be completed to a multiple of g without a fixed zero")
    n_chunks = keep // g
    mask = torch.zeros(rows, T, TILE, dtype=torch.bool, device=scores.device)
    if n_chunks:
        flat = key.reshape(rows, -1)
        pick = torch.argsort(flat, dim=1, descending=True, stable=True)[:, :n_chunks]
        if bool(torch.isneginf(flat.gather(1, pick)).any()):
            raise PatternError("cs256: the budget needs entries that are fixed to zero (or padding)")
        if bool((n_pos.reshape(rows, -1) > 0).sum(1).gt(n_chunks).any()):
            raise PatternError("cs256: the fixed ones need more chunks of g than the budget allows")
        per_tile = torch.zeros(rows, T * (TILE // g), dtype=torch.int64, device=scores.device)
        per_tile.scatter_(1, pick, 1)
        count = per_tile.reshape(rows, T, -1).sum(-1) * g  # kept per tile
        take = torch.arange(TILE, device=scores.device)[None, None, :] < count[:, :, None]
        mask.scatter_(2, order, take)
    return mask.reshape(rows, T * TILE)[:, :d]
