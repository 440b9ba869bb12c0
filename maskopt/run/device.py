"""Where a run computes: the device, and the checks on a model's weights before any work."""
from __future__ import annotations

import torch
from torch import nn

from ..model.adapters import Adapter


def resolve_device(device: str | None) -> torch.device:
    """The compute device: ``device`` if given (checked to exist), else CUDA when available, else CPU."""
    if not device:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"--device {device!r} is not a device name (cpu, cuda, cuda:1, mps): {e}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: this torch build has no CUDA or no GPU is visible; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"--device {device}: only {torch.cuda.device_count()} GPU(s) visible")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {device}: MPS is not available here; use --device cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device {device}: unsupported device type {dev.type!r}")
    return dev


def check_finite_weights(model: nn.Module, adapter: Adapter) -> None:
    """NaN/Inf in a prunable weight is an error naming the layer (checked before any work)."""
    for name, mod in adapter.named_linears(model).items():
        if not torch.isfinite(mod.weight).all():
            raise ValueError(f"weight of {name} contains NaN or Inf")
