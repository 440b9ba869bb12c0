"""File helpers of the export formats: digests and checked safetensors reads."""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from .errors import ExportFormatError


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file (exports record it; loading verifies it, so flipped bits are caught)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors and the metadata of a safetensors file; a truncated/corrupted file is an ExportFormatError."""
    from safetensors import safe_open

    if not path.is_file():
        raise ExportFormatError(f"missing weight file {path}")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            return {k: fh.get_tensor(k) for k in fh.keys()}, meta
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise ExportFormatError(f"{path}: cannot read safetensors ({e}); the file is truncated or corrupted") from None
