"""Find the adapter for a model; unsupported architectures get a clear error."""
from __future__ import annotations

from torch import nn

from .base import Adapter
from .families import FAMILIES


class UnsupportedModelError(ValueError):
    pass


def supported_model_types() -> list[str]:
    return sorted(t for a in FAMILIES for t in a.model_types)


def get_adapter(model: nn.Module) -> Adapter:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    for adapter in FAMILIES:
        if model_type in adapter.model_types:
            return adapter
    raise UnsupportedModelError(
        f"unsupported architecture {model_type!r}; supported model types: {', '.join(supported_model_types())}"
    )


__all__ = ["Adapter", "UnsupportedModelError", "get_adapter", "supported_model_types"]
