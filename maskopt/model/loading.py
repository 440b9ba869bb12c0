"""Load a causal LM and its tokenizer from a local folder, a GGUF file, or a hub id."""
from __future__ import annotations

from pathlib import Path

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


def load_model(name: str | Path, dtype: torch.dtype = torch.float32):
    """(model, tokenizer) for a local HF folder, a folder or file holding one GGUF, or a hub id."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415

    path = Path(name)
    kwargs: dict = {}
    gguf = _gguf_in(path)
    if gguf is not None:
        kwargs["gguf_file"] = gguf
        path = path if path.is_dir() else path.parent
    elif not path.exists():
        if str(name).startswith((".", "/", "~")) or str(name).count("/") > 1:
            raise ModelLoadError(f"model path {name} does not exist")
        # maybe a hub id: transformers will try the hub (and fail clearly offline)
    try:
        config = AutoConfig.from_pretrained(str(path), **kwargs)
    except Exception as e:  # noqa: BLE001
        raise ModelLoadError(
            f"cannot load a model config from {name!r}: {e}\n"
            "Pass a local Hugging Face model folder (config.json + weights), a .gguf file, or a hub id you can reach."
        ) from None
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES  # noqa: PLC0415

    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ModelLoadError(f"{name!r} is a {config.model_type!r} model, not a causal language model")
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(str(path), **kwargs)
    except Exception as e:  # noqa: BLE001
        raise ModelLoadError(f"cannot load model/tokenizer from {name!r}: {e}") from None
    if getattr(model.config, "quantization_config", None) is not None and gguf is not None:
        del model.config.quantization_config  # weights are dequantized floats now
    model.eval()
    return model, tokenizer
