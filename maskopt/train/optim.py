"""Which first-order optimizer dense training and retraining use (SFW has its own class)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch

OPTIMIZERS = ("sgd", "adamw")


@dataclass(frozen=True)
class OptimizerSpec:
    """SGD with (Nesterov) momentum, as the IMP papers use for vision, or AdamW, as usual for LMs.

    The learning rate is set before every step by the schedule; ``lr`` here is only the initial value.
    """

    name: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    nesterov: bool = False

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.name!r}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must lie in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            raise ValueError(f"weight decay must be ≥ 0, got {self.weight_decay}")

    def build(self, params: Iterable[torch.nn.Parameter], lr: float = 0.0) -> torch.optim.Optimizer:
        params = [p for p in params if p.requires_grad]
        if self.name == "sgd":
            return torch.optim.SGD(params, lr=lr, momentum=self.momentum, weight_decay=self.weight_decay,
                                   nesterov=self.nesterov and self.momentum > 0)
        return torch.optim.AdamW(params, lr=lr, weight_decay=self.weight_decay)
