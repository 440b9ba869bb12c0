"""Files: atomic output folders, output checks before any work, bit-packed masks, tensor digests."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

import torch

from .report import REPORT_JSON, write_json  # noqa: F401  (write_json re-exported for callers)

MASKS_FILE = "maskopt_masks.safetensors"
MARKER = ".maskopt-output"  # written into every folder maskopt creates: only such folders are ever replaced


class OutputError(OSError):
    """The output folder cannot be written (or may not be replaced)."""


class OutputExistsError(OutputError, FileExistsError):
    pass


def _tmp_prefix(out: Path) -> str:
    return f".{out.name}.tmp-"


def is_maskopt_output(path: Path) -> bool:
    """A folder that a maskopt run wrote (its marker or its report is there)."""
    return (path / MARKER).is_file() or (path / REPORT_JSON).is_file()


def mark_output(path: Path) -> None:
    (Path(path) / MARKER).write_text("written by maskopt; --overwrite may replace this folder\n")


def check_output(out: str | Path | None, overwrite: bool) -> Path:
    """Fail before any work when ``out`` cannot be written: missing, an existing file, an existing folder
    without --overwrite, a folder that is not a maskopt output (never replaced), or a parent that cannot
    be created or written."""
    if out is None or str(out).strip() == "":
        raise OutputError("no output folder given: pass --out DIR")
    out = Path(out).expanduser()
    resolved = out.resolve()
    if resolved == Path.cwd().resolve() or resolved in Path.cwd().resolve().parents or resolved == Path(resolved.anchor):
        raise OutputError(f"--out {out} is the current folder or one above it; name a new folder, e.g. --out pruned")
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} exists and is a file, not a folder")
    if out.exists():
        if not overwrite:
            raise OutputExistsError(f"output folder {out} exists; pass --overwrite to replace it")
        if not is_maskopt_output(out):
            raise OutputError(f"--overwrite refuses to replace {out}: it is not a maskopt output (no {REPORT_JSON} "
                              f"or {MARKER} in it), so it may hold your own files. Remove it yourself or choose "
                              "another --out")
    parent = out.parent
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise OutputError(f"cannot create {out}: {probe} is a file, not a folder")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=_tmp_prefix(out) + "probe-", dir=parent)
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        raise OutputError(f"cannot write into {parent} (for --out {out}): {e.strerror or e}") from None
    return out


def clean_stale_tmp(out: str | Path) -> list[Path]:
    """Remove temporary folders that interrupted runs with the same output name left behind."""
    out = Path(out)
    if not out.parent.is_dir():
        return []
    stale = [p for p in out.parent.glob(_tmp_prefix(out) + "*") if p.is_dir()]
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return stale


@contextmanager
def atomic_dir(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory next to ``out``; on success it replaces ``out`` in one rename.

    An interrupted or failed run leaves ``out`` untouched (or absent), never half-written. The folder
    gets the usual permissions (umask), not mkdtemp's 0700.
    """
    out = check_output(out, overwrite)
    tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(out), dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    try:
        mark_output(tmp)
        yield tmp
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


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

    tensors = {k: pack_bits(m) for k, m in masks.items()}
    meta = {"shapes": json.dumps({k: list(m.shape) for k, m in masks.items()}), "format": "maskopt-packbits-v1"}
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)


def load_masks(path: str | Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError, safe_open  # noqa: PLC0415

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            shapes = json.loads(meta["shapes"])
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
