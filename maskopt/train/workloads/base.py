"""What a training workload provides: a model, batches, a loss, a metric, and which weights are prunable.

Workloads are small picklable dataclasses (their data is loaded lazily and cached per process),
so soup ingredients can be retrained in separate processes from the workload alone.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Iterator

import torch
from torch import nn

from ..optim import OptimizerSpec
from ..schedules import TrainSchedule


class Workload(ABC):
    name: str = ""
    metric: str = ""
    higher_is_better: bool = True

    # ---- model ----------------------------------------------------------------------------------
    @abstractmethod
    def build_model(self, seed: int = 0) -> nn.Module:
        """A fresh model (randomly initialized with ``seed``, or the pretrained one)."""

    @abstractmethod
    def prunable(self, model: nn.Module) -> dict[str, nn.Parameter]:
        """The weights that masks and sparsity refer to, by name."""

    # ---- data -----------------------------------------------------------------------------------
    @abstractmethod
    def steps_per_epoch(self) -> int:
        ...

    @abstractmethod
    def batches(self, seed: int) -> Iterator[Any]:
        """Endless batches, one reshuffled pass over the training data per epoch (order fixed by ``seed``)."""

    @abstractmethod
    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        ...

    @abstractmethod
    def evaluate(self, model: nn.Module, split: str = "test") -> float:
        """The metric on 'val' (model selection, greedy soups) or 'test' (reporting)."""

    def calibration(self) -> Any:
        """Inputs for pruning methods that need activations (None: magnitude pruning only)."""
        return None

    # ---- recipe -----------------------------------------------------------------------------------
    @abstractmethod
    def default_schedule(self) -> TrainSchedule:
        """The original (dense) training schedule, which FT, LRW, SLR, CLR and ALLR refer to."""

    @abstractmethod
    def default_optimizer(self) -> OptimizerSpec:
        ...

    def better(self, a: float, b: float) -> bool:
        """Is metric value a at least as good as b?"""
        return a >= b if self.higher_is_better else a <= b

    def describe(self) -> dict:
        return {"name": self.name, "metric": self.metric}

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_cache")}


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The permutation of n training examples in ``epoch`` for ``seed`` (reproducible)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(1_000_003 * seed + epoch))
