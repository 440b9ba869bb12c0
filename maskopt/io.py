"""Files: saving a model folder, bit-packed masks, tensor digests (output checks: maskopt.output)."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable

import torch

from .run.output import atomic_dir
from .report import write_json  # noqa: F401  (re-exported for callers)

MASKS_FILE = "maskopt_masks.safetensors"


def save_model(model, tokenizer, out: str | Path, *, overwrite: bool = False, extra: dict[str, str] | None = None) -> Path:
    """Save an HF folder (config + safetensors + tokenizer) and extra text files atomically."""
    with atomic_dir(out, overwrite) as tmp:
        write_model(model, tokenizer, tmp)
        for name, text in (extra or {}).items():
            (tmp / name).write_text(text)
    return Path(out)


def write_model(model, tokenizer, folder: Path) -> None:
    """config + safetensors weights + tokenizer files into an existing folder."""
    model.save_pretrained(folder, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)


# ---- masks --------------------------------------------------------------------------------
def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """A bool tensor as uint8 bytes, 8 entries per byte (row-major, low bit first)."""
    flat = mask.reshape(-1).to(torch.uint8).cpu()
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    weights = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8)
    return (flat.reshape(-1, 8) * weights).sum(1, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    n = 1
    for s in shape:
        n *= s
    if packed.numel() * 8 < n:
        raise ValueError(f"packed mask has {packed.numel()} bytes, too few for shape {shape}")
    bits = (packed[:, None] >> torch.arange(8, dtype=torch.uint8)) & 1
    return bits.reshape(-1)[:n].bool().reshape(shape)


def save_masks(masks: dict[str, torch.Tensor], path: str | Path) -> None:
    """Explicit masks (by layer name, parameter layout), bit-packed in one safetensors file."""
    from safetensors.torch import save_file  # noqa: PLC0415

    items = dict(masks.packed_items() if hasattr(masks, "packed_items") else masks.items())
    tensors = {k: m.packed if hasattr(m, "packed") else pack_bits(m) for k, m in items.items()}
    # one metadata key: safetensors writes several in a varying order, and the file must be byte-identical
    meta = {"maskopt": json.dumps({"format": "maskopt-packbits-v1",
                                   "shapes": {k: list(m.shape) for k, m in sorted(items.items())}}, sort_keys=True)}
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)


def load_masks(path: str | Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError, safe_open  # noqa: PLC0415

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            shapes = json.loads(meta["maskopt"])["shapes"] if "maskopt" in meta else json.loads(meta["shapes"])
            return {k: unpack_bits(f.get_tensor(k), tuple(shapes[k])) for k in f.keys()}
    except (KeyError, ValueError, OSError, SafetensorError) as e:
        raise ValueError(f"{path} is not a readable maskopt mask file: {e}") from None


# ---- digests ------------------------------------------------------------------------------
def tensor_digest(tensors: Iterable[tuple[str, torch.Tensor]]) -> str:
    """blake2b over names, shapes, dtypes and bytes of tensors (identifies weights and token windows)."""
    h = hashlib.blake2b(digest_size=16)
    for name, t in tensors:
        t = t.detach().contiguous().cpu()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
