"""Atomic save of a model folder: write into a temporary sibling, then rename."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


class OutputExistsError(FileExistsError):
    pass


def check_output(out: str | Path, overwrite: bool) -> Path:
    out = Path(out)
    if out.exists() and not overwrite:
        raise OutputExistsError(f"output directory {out} exists; pass --overwrite to replace it")
    return out


@contextmanager
def atomic_dir(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory next to ``out``; on success it replaces ``out`` in one rename.

    An interrupted or failed run leaves ``out`` untouched (or absent), never half-written.
    """
    out = check_output(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
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
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        for name, text in (extra or {}).items():
            (tmp / name).write_text(text)
    return Path(out)


def write_json(path: str | Path, obj) -> None:
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)
