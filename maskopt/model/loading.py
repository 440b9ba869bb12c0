"""Load a causal LM and its tokenizer from a local folder, a GGUF file, or a hub id.

Checks that need only the config (not a causal LM, an unsupported architecture) run before any weight
is read. Code shipped inside a model folder (``auto_map``) never runs unless the caller opts in with
``trust_remote_code=True``; a name that is neither a local path nor reachable on the hub fails at once.
"""
from __future__ import annotations

import json
import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch


class ModelLoadError(ValueError):
    pass


def _gguf_in(path: Path) -> str | None:
    if path.is_file() and path.suffix == ".gguf":
        return path.name
    if path.is_dir() and not (path / "config.json").exists():
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return ggufs[0].name
    return None


def _check_gguf(file: Path) -> None:
    """A .gguf file whose header or tensor data does not fit its size is named as truncated or corrupted."""
    try:
        from gguf import GGUFReader  # noqa: PLC0415

        reader = GGUFReader(str(file))
        size = file.stat().st_size
        end = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
    except Exception as e:  # noqa: BLE001 - numpy/struct errors of a short or damaged file
        raise ModelLoadError(f"{file} cannot be read as GGUF: the file is truncated or corrupted "
                             f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    if end > size:
        raise ModelLoadError(f"{file} is truncated: its tensors need {end} bytes, the file has {size}")


def _check_folder(path: Path, name: str | Path, trust_remote_code: bool) -> None:
    """A config that names its own code (auto_map) is refused unless that code may run: loading it as a
    built-in family instead could silently give another model."""
    try:
        raw = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{name}: config.json is not readable JSON ({e})") from None
    if not isinstance(raw, dict):
        raise ModelLoadError(f"{name}: config.json does not hold a JSON object")
    if raw.get("auto_map") and not trust_remote_code:
        raise ModelLoadError(
            f"{name} ships its own model code (auto_map in config.json), which maskopt does not run without "
            "--trust-remote-code; loading it as the built-in "
            f"{raw.get('model_type', '?')!r} instead could give a different model. Pass --trust-remote-code only "
            "if you trust that code, or remove auto_map from config.json if the built-in family is right")


def _check_weights(path: Path, name: str | Path) -> None:
    """The weights of a model folder must be safetensors: pickles are never loaded."""
    if not any(path.glob("*.safetensors")):
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl"))
        found = f" (only {', '.join(pickles[:3])}: pickle files, which maskopt never loads)" if pickles else ""
        raise ModelLoadError(f"{name} holds no *.safetensors weights{found}; save the model with "
                             "safe_serialization=True (the default of save_pretrained) or pass a .gguf file")


def hub_reachable(timeout: float = 2.0) -> bool:
    """Whether the Hugging Face hub answers (False at once when HF_HUB_OFFLINE is set)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    host = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://")[-1].split("/")[0]
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


@contextmanager
def quiet_loading(progress: bool) -> Iterator[None]:
    """Hide transformers' own progress bars (weight loading) when ``progress`` is False."""
    from transformers.utils import logging as hf_logging  # noqa: PLC0415

    was = hf_logging.is_progress_bar_enabled()
    if not progress:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def load_config(name: str | Path, *, trust_remote_code: bool = False):
    """(config, load kwargs, path) of a model, with every check that needs no weights."""
    from transformers import AutoConfig  # noqa: PLC0415
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES  # noqa: PLC0415

    from .adapters import UnsupportedModelError, supported_model_types  # noqa: PLC0415

    path = Path(name).expanduser()
    kwargs: dict = {"trust_remote_code": trust_remote_code}
    gguf = _gguf_in(path)
    if gguf is not None:
        kwargs["gguf_file"] = gguf
        _check_gguf(path if path.is_file() else path / gguf)
        path = path if path.is_dir() else path.parent
    elif path.is_file():
        raise ModelLoadError(f"{name} is a file: pass the model folder (config.json + *.safetensors) or a .gguf file")
    elif path.exists() and not path.is_dir():
        raise ModelLoadError(f"{name} is neither a model folder nor a .gguf file")
    elif not path.exists():
        if str(name).startswith((".", "/", "~")) or str(name).count("/") > 1 or str(name).endswith(".gguf"):
            raise ModelLoadError(f"model path {name} does not exist")
        try:  # a hub id already in the local cache loads without the network
            AutoConfig.from_pretrained(str(name), local_files_only=True, trust_remote_code=trust_remote_code)
            kwargs["local_files_only"] = True
        except Exception:  # noqa: BLE001
            if not hub_reachable():
                raise ModelLoadError(
                    f"{name!r} is not a local folder or file, and the Hugging Face hub is unreachable (offline), so "
                    "it cannot be a hub id either. Pass a local model folder (config.json + weights) or a .gguf file."
                ) from None
    elif path.is_dir() and not (path / "config.json").exists():
        raise ModelLoadError(f"{name} holds no config.json (and not exactly one .gguf file): not a model folder")
    else:
        _check_folder(path, name, trust_remote_code)
    try:
        config = AutoConfig.from_pretrained(str(path), **kwargs)
    except Exception as e:  # noqa: BLE001
        msg = _first_line(e)
        hint = (" It ships its own code (auto_map); pass --trust-remote-code only if you trust that code."
                if "trust_remote_code" in str(e) else "")
        raise ModelLoadError(f"cannot load a model config from {name!r}: {msg}.{hint}\n"
                             "Pass a local Hugging Face model folder (config.json + weights), a .gguf file, "
                             "or a hub id you can reach.") from None
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and not getattr(config, "auto_map", None):
        raise ModelLoadError(f"{name!r} is a {config.model_type!r} model, not a causal language model")
    if config.model_type not in supported_model_types():
        raise UnsupportedModelError(
            f"unsupported architecture {config.model_type!r} in {name!r}; supported model types: "
            f"{', '.join(supported_model_types())}")
    if path.is_dir() and "gguf_file" not in kwargs:
        _check_weights(path, name)
    return config, kwargs, path


def _first_line(e: Exception) -> str:
    """The first line of an error from a library, without advice to unpickle (maskopt never does)."""
    text = str(e).strip()
    line = text.splitlines()[0] if text else type(e).__name__
    if "weights_only" in text or "pickle" in text.lower():
        return f"{type(e).__name__} while reading a pickle file, which maskopt never unpickles"
    return line


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@contextmanager
def as_dtype(model, dtype: torch.dtype | None) -> Iterator[None]:
    """The model's floating-point parameters in ``dtype`` inside the block, and back afterwards (exact whenever one
    dtype holds the other's values, e.g. bfloat16 ↔ float32); None: unchanged."""
    was = next(model.parameters()).dtype
    if dtype is None or dtype == was:
        yield
        return
    model.to(dtype)
    try:
        yield
    finally:
        model.to(was)


def checkpoint_dtype(config) -> torch.dtype:
    """The dtype a checkpoint was saved in (its config's ``dtype`` / ``torch_dtype``); float32 when it says none."""
    d = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(d, str):
        d = DTYPES.get(d.replace("torch.", ""))
    return d if d in DTYPES.values() else torch.float32


def resolve_dtype(dtype: str | torch.dtype | None, config=None) -> torch.dtype:
    """'auto' (or None): the checkpoint's own dtype (float32 for a GGUF, which is dequantized); or a name."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return checkpoint_dtype(config) if config is not None else torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"--dtype must be auto, {', '.join(DTYPES)}; got {dtype!r}")
    return DTYPES[dtype]


def load_model(name: str | Path, dtype: str | torch.dtype | None = torch.float32, *, trust_remote_code: bool = False,
               progress: bool = True):
    """(model, tokenizer) for a local HF folder, a folder or file holding one GGUF, or a hub id; ``dtype``: a torch
    dtype, a name, or 'auto' (the checkpoint's own)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415

    config, kwargs, path = load_config(name, trust_remote_code=trust_remote_code)
    dtype = resolve_dtype(dtype, None if "gguf_file" in kwargs else config)
    try:
        with quiet_loading(progress):
            model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, **kwargs)
            tokenizer = AutoTokenizer.from_pretrained(str(path), **kwargs)
    except Exception as e:  # noqa: BLE001
        raise ModelLoadError(f"cannot load model/tokenizer from {name!r}: {_first_line(e)}") from None
    if "gguf_file" in kwargs:  # the weights are dequantized floats now: a plain model (saveable as such)
        if getattr(model.config, "quantization_config", None) is not None:
            del model.config.quantization_config
        model.hf_quantizer = None
        model.is_quantized = False
    model.eval()
    return model, tokenizer
