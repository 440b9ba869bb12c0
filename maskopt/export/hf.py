"""The plain Hugging Face folder (config + safetensors with zeros in it): the reference format."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .files import read_safetensors, sha256_file
from .errors import ExportFormatError
from .registry import ExportFormat, register_format


@register_format("hf")
class HFFormat(ExportFormat):
    """``save_pretrained`` with safetensors; loadable by ``AutoModelForCausalLM.from_pretrained``."""

    def save(self, model, out: Path, **opts: Any) -> dict[str, Any]:
        if opts:
            raise ValueError(f"format 'hf' takes no options, got {sorted(opts)}")
        model.save_pretrained(out, safe_serialization=True)
        files = sorted(p.name for p in out.glob("*.safetensors"))
        return {"sha256": {f: sha256_file(out / f) for f in files}}

    def load_state(self, path: Path, info: dict[str, Any]) -> dict[str, torch.Tensor]:
        files = sorted(path.glob("*.safetensors"))
        if not files:
            raise ExportFormatError(f"{path}: no *.safetensors weight file")
        state: dict[str, torch.Tensor] = {}
        for f in files:
            state.update(read_safetensors(f)[0])
        return state
