"""CS256: compressed sparse tiles (layout and bits in docs/cs256.md); codec, matmul and the export format.

A weight W (rows × d) is cut into tiles of 256 consecutive inputs of a row (the last tile of a row
is d mod 256 wide when 256 ∤ d). A tile keeps a multiple of g of its entries (the ``cs256`` mask
pattern). Stored per matrix:

* ``counts``    uint8 (rows, T), T = ⌈d/256⌉: kept entries of the tile divided by g (≤ 256/g ≤ 128);
* ``positions`` uint8 (nnz,): in-tile position of every kept entry, row-major, ascending inside a tile;
* ``values``    (nnz,) in the model dtype, or int8 (nnz,) / int4 packed two per byte (nnz/2,) low
  nibble first, with ``scales`` float16 (⌈nnz/q⌉,): one symmetric scale per q consecutive kept values.

Entry i of the tile (r, t) holding c_rt = g·counts[r, t] entries lies in column 256·t + positions[i];
the row of entry i and its tile follow from the prefix sums of the counts (the hierarchical index:
row offset = Σ counts of earlier rows, tile offset = row offset + Σ counts of earlier tiles in the row).
Index bits per kept weight: 8 + 8·T·rows / nnz (= 8 + 8/(256·density) for 256 | d).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..solve.patterns import TILE, n_tiles, tile_counts
from .errors import ExportFormatError, MaskFitError
from .files import read_safetensors, sha256_file
from .registry import ExportFormat, register_format
from .weights import dense_state, sparse_linears

QUANTS = ("none", "int8", "int4")
QMAX = {"int8": 127, "int4": 7}


@dataclass
class CS256Tensor:
    """One matrix in CS256 form (see the module docstring for the fields)."""

    shape: tuple[int, int]
    g: int
    counts: torch.Tensor
    positions: torch.Tensor
    values: torch.Tensor
    scales: torch.Tensor | None = None
    quant: str = "none"
    qgroup: int = 32
    dtype: torch.dtype = torch.float32  # dtype of the decoded matrix

    @property
    def nnz(self) -> int:
        return int(self.positions.numel())

    def nbytes(self) -> dict[str, int]:
        """Bytes of the index (counts + positions) and of the values (+ scales)."""
        idx = self.counts.numel() * self.counts.element_size() + self.positions.numel()
        val = self.values.numel() * self.values.element_size()
        sc = 0 if self.scales is None else self.scales.numel() * self.scales.element_size()
        return {"index": idx, "values": val + sc}

    def tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        out = {f"{prefix}.cs256_counts": self.counts, f"{prefix}.cs256_positions": self.positions,
               f"{prefix}.cs256_values": self.values}
        if self.scales is not None:
            out[f"{prefix}.cs256_scales"] = self.scales
        return out

    def meta(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "g": self.g, "quant": self.quant, "qgroup": self.qgroup,
                "dtype": str(self.dtype).removeprefix("torch.")}


# ---- quantization of the kept values ----------------------------------------------------
def _quantize(values: torch.Tensor, quant: str, qgroup: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-group quantization: s = max|v|/qmax (float16), q = round(v/s) ∈ [−qmax, qmax]."""
    qmax = QMAX[quant]
    n = values.numel()
    pad = -n % qgroup
    v = torch.nn.functional.pad(values.to(torch.float32), (0, pad)).reshape(-1, qgroup)
    scale = (v.abs().amax(1) / qmax).to(torch.float16)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(v / scale.to(torch.float32)[:, None]).clamp(-qmax, qmax).to(torch.int8).reshape(-1)[:n]
    if quant == "int4":
        u = (q + 8).to(torch.uint8)  # 1..15, two per byte, low nibble first (n is even: g | n)
        q = u[0::2] | (u[1::2] << 4)
    return q, scale


def _dequantize(t: CS256Tensor) -> torch.Tensor:
    if t.quant == "none":
        return t.values
    if t.quant == "int4":
        u = t.values
        q = torch.stack(((u & 0xF).to(torch.int8) - 8, (u >> 4).to(torch.int8) - 8), 1).reshape(-1)
    else:
        q = t.values
    scale = t.scales.to(torch.float32).repeat_interleave(t.qgroup)[: t.nnz]
    return (q.to(torch.float32) * scale).to(t.dtype)


# ---- codec -------------------------------------------------------------------------------
def check_options(g: int, quant: str, qgroup: int) -> None:
    if quant not in QUANTS:
        raise ValueError(f"quant must be one of {QUANTS}, got {quant!r}")
    if not (2 <= g <= TILE and TILE % g == 0):
        raise ValueError(f"cs256 group size g must divide {TILE} and be ≥ 2, got {g}")
    if quant != "none" and (qgroup < 1 or qgroup % 2):
        raise ValueError(f"qgroup must be a positive even number, got {qgroup}")


def encode(weight: torch.Tensor, mask: torch.Tensor | None = None, *, g: int = 8, quant: str = "none",
           qgroup: int = 32) -> CS256Tensor:
    """CS256 form of ``weight`` keeping ``mask`` (default: its non-zeros). Refuses masks that do not fit.

    Exact: ``decode(encode(W, M))`` equals ``W ⊙ M`` bit for bit when quant is 'none'.
    """
    if weight.ndim != 2:
        raise ValueError(f"cs256 encodes 2-D weights, got shape {tuple(weight.shape)}")
    check_options(g, quant, qgroup)
    mask = weight != 0 if mask is None else mask.to(torch.bool)
    if mask.shape != weight.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} != weight shape {tuple(weight.shape)}")
    counts = tile_counts(mask)
    bad = counts % g != 0
    if bool(bad.any()):
        r, t = (int(i) for i in torch.nonzero(bad)[0])
        raise MaskFitError(f"mask does not fit cs256 (g={g}): {int(bad.sum())} tiles keep a count that is not a "
                           f"multiple of {g}, e.g. row {r} tile {t} keeps {int(counts[r, t])}; prune with "
                           f"--pattern cs256{'' if g == 8 else f':{g}'} (or export with pad=true)")
    cols = torch.nonzero(mask)[:, 1]
    positions = (cols % TILE).to(torch.uint8)
    values = weight[mask]
    scales = None
    if quant != "none":
        values, scales = _quantize(values, quant, qgroup)
    return CS256Tensor((weight.shape[0], weight.shape[1]), g, (counts // g).to(torch.uint8), positions,
                       values, scales, quant, qgroup, weight.dtype)


def index(t: CS256Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(column of every stored entry, int64 (nnz,); start of every row in the entry stream, int64 (rows,)).

    Decoded per chunk of g entries (a chunk never straddles a tile): the tile of each chunk comes from
    the counts, then column = 256·tile + position. Checks the counts against the stored entries.
    """
    rows, d = t.shape
    T = n_tiles(d)
    if tuple(t.counts.shape) != (rows, T) or t.counts.dtype != torch.uint8 or t.positions.dtype != torch.uint8:
        raise ExportFormatError(f"cs256: counts must be uint8 {(rows, T)} and positions uint8, got "
                                f"{t.counts.dtype} {tuple(t.counts.shape)} / {t.positions.dtype}")
    chunks = t.counts.to(torch.int64)  # (rows, T), entries / g
    widths = torch.full((T,), TILE, dtype=torch.int64)
    widths[-1] = d - (T - 1) * TILE
    if bool((chunks * t.g > widths).any()):
        raise ExportFormatError("cs256: a tile count exceeds the tile width (corrupted counts)")
    total = int(chunks.sum()) * t.g
    if total != t.nnz:
        raise ExportFormatError(f"cs256: the counts add up to {total} entries but {t.nnz} positions are stored "
                                "(truncated or corrupted)")
    chunk_tile = torch.repeat_interleave(torch.arange(T).repeat(rows), chunks.reshape(-1))
    col = (chunk_tile[:, None] * TILE + t.positions.reshape(-1, t.g).to(torch.int64)).reshape(-1)
    offsets = torch.zeros(rows, dtype=torch.int64)
    offsets[1:] = torch.cumsum(chunks.sum(1) * t.g, 0)[:-1]
    return col, offsets


def validate(t: CS256Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every structural check: counts, sizes of values and scales, positions in range and strictly increasing
    inside each tile. Raises ExportFormatError on a truncated or corrupted tensor; returns ``index(t)``."""
    _check_values(t)
    col, offsets = index(t)
    if t.nnz:
        same_tile = (col[1:] // TILE) == (col[:-1] // TILE)
        new_row = torch.zeros(t.nnz, dtype=torch.bool)
        new_row[_row_starts(t)] = True
        if bool((col >= t.shape[1]).any()) or bool((same_tile & ~new_row[1:] & (col[1:] <= col[:-1])).any()):
            raise ExportFormatError("cs256: in-tile positions out of range or not strictly increasing (corrupted)")
    return col, offsets


def _row_starts(t: CS256Tensor) -> torch.Tensor:
    per_row = t.counts.to(torch.int64).sum(1) * t.g
    starts = torch.cumsum(per_row, 0) - per_row
    return starts[(per_row > 0) & (starts < t.nnz)]


def _check_values(t: CS256Tensor) -> None:
    n = t.nnz
    want = {"none": n, "int8": n, "int4": (n + 1) // 2}[t.quant]
    if t.values.numel() != want:
        raise ExportFormatError(f"cs256: {t.values.numel()} stored values, expected {want} (truncated or corrupted)")
    if t.quant != "none":
        if t.scales is None or t.scales.numel() != math.ceil(n / t.qgroup):
            raise ExportFormatError("cs256: missing or mis-sized quantization scales")


def decode(t: CS256Tensor) -> torch.Tensor:
    """The dense matrix (rows × d) in ``t.dtype``; zeros outside the kept entries. Validates ``t`` first."""
    col, _ = validate(t)
    rows = torch.repeat_interleave(torch.arange(t.shape[0]), t.counts.to(torch.int64).sum(1) * t.g)
    out = torch.zeros(t.shape, dtype=t.dtype)
    out[rows, col] = _dequantize(t).to(t.dtype)
    return out


def matmul(x: torch.Tensor, t: CS256Tensor, plan: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """y = x Wᵀ for a small batch x (…, d), straight from the format: no dense W is formed.

    The index is decoded per chunk (``index``; pass its result as ``plan`` to reuse it). For one input
    vector y_r = Σ_{entries e of row r} v_e · x[col_e] is a gather, a product and a per-row sum (a reshape
    when every row keeps the same count, as the cs256 pattern guarantees); for a batch it is one fused
    gather-multiply-sum (``embedding_bag`` with per-entry weights over the rows of xᵀ). Checks the counts
    and value sizes, not the positions (``validate`` does, and every loader runs it).
    """
    rows, d = t.shape
    if x.shape[-1] != d:
        raise ValueError(f"input has {x.shape[-1]} features, the cs256 matrix expects {d}")
    _check_values(t)
    col, offsets = plan if plan is not None else index(t)
    xb = x.reshape(-1, d)
    v = _dequantize(t).to(x.dtype)
    if xb.shape[0] == 1:
        prod = xb[0][col] * v
        per_row = t.counts.to(torch.int64).sum(1) * t.g
        if t.nnz and bool((per_row == per_row[0]).all()):
            y = prod.view(rows, -1).sum(1)[None]
        else:
            y = torch.segment_reduce(prod, "sum", lengths=per_row)[None]
    else:
        y = torch.nn.functional.embedding_bag(col, xb.T.contiguous(), offsets, mode="sum", per_sample_weights=v).T
    return y.reshape(*x.shape[:-1], rows)


def _kept(name: str, W: torch.Tensor, stored: torch.Tensor | None) -> torch.Tensor:
    """The stored mask of ``name`` (checked against W: nothing non-zero outside it), else W's non-zeros."""
    nonzero = W != 0
    if stored is None:
        return nonzero
    stored = stored.to(device=W.device, dtype=torch.bool)
    if stored.shape != W.shape:
        raise MaskFitError(f"stored mask of {name} has shape {tuple(stored.shape)}, the weight {tuple(W.shape)}")
    outside = int((nonzero & ~stored).sum())
    if outside:
        raise MaskFitError(f"{name}: {outside} non-zero weights lie outside the stored mask (the folder's weights "
                           "were changed after pruning); remove maskopt_masks.safetensors to export the non-zeros")
    return stored


def pad_mask(mask: torch.Tensor, g: int) -> torch.Tensor:
    """The smallest superset of ``mask`` that fits cs256: every tile gets its lowest-index free entries
    until its count is a multiple of g (stored as explicit zeros: the weights do not change)."""
    rows, d = mask.shape
    T = n_tiles(d)
    need = (-tile_counts(mask)) % g  # (rows, T)
    m = torch.nn.functional.pad(mask, (0, T * TILE - d), value=True).reshape(rows, T, TILE)
    free_rank = torch.cumsum((~m).to(torch.int64), -1)
    add = (~m) & (free_rank <= need[:, :, None])
    return (m | add).reshape(rows, T * TILE)[:, :d]


# ---- the export format ---------------------------------------------------------------------
WEIGHTS = "model.cs256.safetensors"


@register_format("cs256")
class CS256Format(ExportFormat):
    """Sparse linears in CS256 (options: g, quant = none|int8|int4, qgroup, pad, min_sparsity);
    every other tensor dense, in one safetensors file ``model.cs256.safetensors`` with a JSON header.
    The kept set of a linear is its stored mask where given (kept zeros count), else its non-zeros."""

    uses_masks = True

    def save(self, model, out: Path, *, g: int = 8, quant: str = "none", qgroup: int = 32, pad: bool = False,
             min_sparsity: float = 0.1, masks: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
        from safetensors.torch import save_file

        tensors: dict[str, torch.Tensor] = {}
        layers: dict[str, Any] = {}
        padded = 0
        stats = {"index_bytes": 0, "value_bytes": 0, "kept": 0, "weights": 0}
        check_options(g, quant, qgroup)
        sparse = sparse_linears(model, min_sparsity)
        if not sparse:
            raise MaskFitError(f"no linear layer has ≥ {min_sparsity:.0%} zeros: nothing to compress")
        for name, W in sparse.items():
            mask = _kept(name, W, (masks or {}).get(name))
            if pad:
                full = pad_mask(mask, g)
                padded += int((full & ~mask).sum())
                mask = full
            t = encode(W.detach().cpu(), mask, g=g, quant=quant, qgroup=qgroup)
            tensors.update(t.tensors(name))
            layers[name] = t.meta()
            nb = t.nbytes()
            stats["index_bytes"] += nb["index"]
            stats["value_bytes"] += nb["values"]
            stats["kept"] += t.nnz
            stats["weights"] += W.numel()
        for k, v in dense_state(model, skip=set(f"{n}.weight" for n in sparse)).items():
            tensors[k] = v
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / WEIGHTS),
                  metadata={"cs256": json.dumps({"format": "cs256", "layers": layers}, sort_keys=True)})  # one key:
        # safetensors writes several metadata keys in a varying order, and the same export must give the same bytes
        model.config.save_pretrained(out)
        stats.update(padded_zeros=padded, sha256={WEIGHTS: sha256_file(out / WEIGHTS)},
                     index_bits_per_kept=8 * stats["index_bytes"] / max(stats["kept"], 1),
                     options={"g": g, "quant": quant, "qgroup": qgroup, "pad": pad, "min_sparsity": min_sparsity})
        return stats

    def load_state(self, path: Path, info: dict[str, Any]) -> dict[str, torch.Tensor]:
        f = path / WEIGHTS
        tensors, meta = read_safetensors(f)
        try:
            meta = json.loads(meta["cs256"]) if "cs256" in meta else {**meta, "layers": json.loads(meta.get("layers", "{}"))}
        except ValueError:
            raise ExportFormatError(f"{f}: its cs256 metadata is not valid JSON") from None
        if meta.get("format") != "cs256":
            raise ExportFormatError(f"{f}: not a cs256 file (format {meta.get('format')!r})")
        layers = meta.get("layers", {})
        state: dict[str, torch.Tensor] = {}
        for name, m in layers.items():
            try:
                t = CS256Tensor((int(m["shape"][0]), int(m["shape"][1])), int(m["g"]),
                                tensors.pop(f"{name}.cs256_counts"), tensors.pop(f"{name}.cs256_positions"),
                                tensors.pop(f"{name}.cs256_values"), tensors.pop(f"{name}.cs256_scales", None),
                                m["quant"], int(m["qgroup"]), getattr(torch, m["dtype"]))
            except KeyError as e:
                raise ExportFormatError(f"{f}: layer {name} lacks tensor or field {e}") from None
            state[f"{name}.weight"] = decode(t)
        state.update(tensors)
        return state
