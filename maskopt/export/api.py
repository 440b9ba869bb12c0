"""export_model / load_exported: any registered format, written atomically, loaded with checks.

An exported folder holds the format's weight file(s), ``config.json``, the tokenizer and
``maskopt_export.json`` ({"format", "options", "sha256": {file: digest}, statistics}). Loading verifies
every digest (a flipped bit is an error, never silently wrong weights), rebuilds the model from its
config, and requires the state dict to match the model exactly: every tensor present (tied weights
may be absent) and of the right shape.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..io import write_json
from ..run.output import atomic_dir, check_dir, clean_stale, output_id
from .errors import ExportFormatError
from .files import sha256_file
from .registry import get_format
from .weights import tied_aliases

INFO = "maskopt_export.json"


def export_model(model: torch.nn.Module, tokenizer, out_dir: str | Path, fmt: str = "hf", *,
                 overwrite: bool = False, masks: dict[str, torch.Tensor] | None = None,
                 inputs: tuple = (), **opts: Any) -> dict[str, Any]:
    """Write ``model`` (and ``tokenizer``) to ``out_dir`` in format ``fmt``; returns the export info.

    ``masks`` (as saved by ``maskopt prune``) are the kept sets, kept zeros included; without them a
    format that needs them takes the non-zeros. Nothing is left at ``out_dir`` when the export fails
    (e.g. a mask that does not fit the format).
    """
    from .._version import __version__

    f = get_format(fmt)
    if masks and f.uses_masks:
        opts["masks"] = masks
    with atomic_dir(out_dir, overwrite, inputs) as tmp:
        stats = f.save(model, tmp, **opts)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        info = {"format": f.name, "maskopt_version": __version__, **stats, "output_id": output_id(tmp)}
        write_json(tmp / INFO, info)
    return info


def read_info(path: Path) -> dict[str, Any]:
    """The export info of a folder; a plain HF folder without one reads as format 'hf' (no digests)."""
    p = path / INFO
    if not p.exists():
        if (path / "config.json").exists() and any(path.glob("*.safetensors")):
            return {"format": "hf", "sha256": {}}
        raise ExportFormatError(f"{path} is neither an export of maskopt ({INFO}) nor a Hugging Face folder")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ExportFormatError(f"{p}: not valid JSON ({e})") from None


def _confined(path: Path, name: Any) -> Path:
    """``path / name`` for a plain file name of the folder; any name that could leave it is refused."""
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (".", "..") \
            or Path(name).is_absolute() or "\x00" in name:
        raise ExportFormatError(f"{path}: {INFO} names the file {name!r}, which is not a plain file name inside "
                                "the folder; refusing to read it")
    f = path / name
    if f.is_symlink() or f.resolve().parent != path.resolve():
        raise ExportFormatError(f"{path}: {name} leaves the folder (a link); refusing to read it")
    return f


def verify_digests(path: Path, info: dict[str, Any]) -> None:
    digests = info.get("sha256", {})
    if not isinstance(digests, dict):
        raise ExportFormatError(f"{path}: {INFO} has a malformed sha256 entry")
    for name, digest in digests.items():
        f = _confined(path, name)
        if not f.is_file():
            raise ExportFormatError(f"{path}: weight file {name} is missing")
        if sha256_file(f) != digest:
            raise ExportFormatError(f"{f}: SHA-256 mismatch: the file is corrupted or truncated")


def _config(path: Path):
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(str(path))
    except Exception as e:  # noqa: BLE001
        raise ExportFormatError(f"{path}: cannot read config.json ({e})") from None
    if getattr(config, "quantization_config", None) is not None:
        del config.quantization_config  # the weights are decompressed by the format, not by transformers
    return config


def load_exported(path: str | Path, dtype: torch.dtype | None = None) -> torch.nn.Module:
    """Rebuild the torch model of an exported folder (any registered format), in eval mode."""
    from transformers import AutoModelForCausalLM

    path = Path(path)
    if not path.is_dir():
        raise ExportFormatError(f"{path} is not a folder")
    info = read_info(path)
    verify_digests(path, info)
    state = get_format(info["format"]).load_state(path, info)
    config = _config(path)
    model = AutoModelForCausalLM.from_config(config)
    want = model.state_dict()
    aliases = tied_aliases(model)
    unexpected = sorted(set(state) - set(want))
    missing = sorted(k for k in set(want) - set(state) if not (aliases.get(k, set()) & set(state)))
    if unexpected or missing:
        raise ExportFormatError(f"{path}: tensors do not match the model of config.json: missing {missing[:5]}"
                                f"{'…' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}")
    for k, v in state.items():
        if tuple(v.shape) != tuple(want[k].shape):
            raise ExportFormatError(f"{path}: tensor {k} has shape {tuple(v.shape)}, the model expects "
                                    f"{tuple(want[k].shape)}")
    model.load_state_dict(state, strict=False)
    if dtype is not None:
        model.to(dtype)
    model.eval()
    return model


def load_any(path: str | Path, dtype: torch.dtype = torch.float32):
    """(model, tokenizer) of an exported folder, or of anything maskopt.model.loading.load_model reads."""
    from transformers import AutoTokenizer

    from ..model.loading import load_model

    p = Path(path)
    if p.is_dir() and (p / INFO).exists():
        return load_exported(p, dtype), AutoTokenizer.from_pretrained(str(p))
    return load_model(path, dtype)


def coerce_options(fmt: str, opts: dict[str, str]) -> dict[str, Any]:
    """CLI strings → the types of the format's ``save`` keywords; unknown keys are a clear error."""
    import inspect

    params = {k: p for k, p in inspect.signature(get_format(fmt).save).parameters.items()
              if p.kind is inspect.Parameter.KEYWORD_ONLY and k != "masks"}
    unknown = set(opts) - set(params)
    if unknown:
        raise ValueError(f"format {fmt!r} has no option(s) {sorted(unknown)}; options: "
                         f"{', '.join(f'{k}={p.default}' for k, p in params.items()) or 'none'}")
    out: dict[str, Any] = {}
    for k, v in opts.items():
        t = type(params[k].default)
        if t is bool:
            if v.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(f"option {k} takes true/false, got {v!r}")
            out[k] = v.lower() in ("1", "true", "yes", "on")
        elif t in (int, float):
            try:
                out[k] = t(v)
            except ValueError:
                raise ValueError(f"option {k} takes a number, got {v!r}") from None
        else:
            out[k] = v
    return out


def export_folder(src: str | Path, out: str | Path, fmt: str, *, overwrite: bool = False,
                  **opts: Any) -> dict[str, Any]:
    """Load a pruned model folder (or any export) and write it to ``out`` in ``fmt``; the output is checked
    (and temporaries of a killed earlier export removed) before anything is loaded."""
    from ..io import MASKS_FILE, load_masks

    get_format(fmt)
    check_dir(out, overwrite, (src,))
    clean_stale(out)
    model, tokenizer = load_any(src)
    masks_file = Path(src) / MASKS_FILE
    masks = load_masks(masks_file) if masks_file.is_file() else None
    return export_model(model, tokenizer, out, fmt, overwrite=overwrite, masks=masks, inputs=(src,), **opts)
