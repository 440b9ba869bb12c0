"""scikit-learn's 8×8 handwritten digits (1797 images, shipped with the package, never downloaded).

Split 60/20/20 into train / val / test with a fixed seed; pixels scaled to [0, 1]. Models: an MLP
(LeNet-300-100 shape, 64-300-100-10, as the pruning papers use on MNIST) or a small CNN.
Metric: test accuracy in percent.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..optim import OptimizerSpec
from ..schedules import TrainSchedule
from .base import Workload, epoch_order

ARCHS = ("mlp", "cnn")


def _need_sklearn():
    try:
        from sklearn.datasets import load_digits  # noqa: PLC0415
    except ImportError:
        raise ImportError("the digits workload needs scikit-learn: pip install 'maskopt[train]'") from None
    return load_digits


class SmallCNN(nn.Module):
    """conv(1→16, 3×3) → ReLU → conv(16→32, 3×3) → ReLU → 2×2 max-pool → linear(512→64) → ReLU → linear(64→10)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = nn.Linear(512, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(-1, 1, 8, 8)
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


@dataclass
class DigitsWorkload(Workload):
    arch: str = "mlp"
    hidden: tuple[int, ...] = (300, 100)
    batch_size: int = 64
    split_seed: int = 0
    epochs: int = 30  # length of the original training schedule
    lr: float = 0.1

    name = "digits"
    metric = "accuracy"
    higher_is_better = True

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {self.arch!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be ≥ 1, got {self.batch_size}")

    def _data(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        if getattr(self, "_cache_data", None) is None:
            ds = _need_sklearn()()
            X = torch.tensor(ds.data, dtype=torch.float32) / 16.0
            y = torch.tensor(ds.target, dtype=torch.long)
            perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(self.split_seed))
            n_tr, n_va = int(0.6 * len(y)), int(0.2 * len(y))
            idx = {"train": perm[:n_tr], "val": perm[n_tr:n_tr + n_va], "test": perm[n_tr + n_va:]}
            self._cache_data = {k: (X[i], y[i]) for k, i in idx.items()}
        return self._cache_data

    def build_model(self, seed: int = 0) -> nn.Module:
        torch.manual_seed(seed)
        if self.arch == "cnn":
            return SmallCNN()
        layers: list[nn.Module] = []
        sizes = (64, *self.hidden)
        for a, b in zip(sizes, sizes[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(sizes[-1], 10))
        return nn.Sequential(*layers)

    def prunable(self, model: nn.Module) -> dict[str, nn.Parameter]:
        return {f"{n}.weight": m.weight for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}

    def steps_per_epoch(self) -> int:
        return math.ceil(len(self._data()["train"][1]) / self.batch_size)

    def batches(self, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        X, y = self._data()["train"]
        epoch = 0
        while True:
            order = epoch_order(len(y), seed, epoch)
            for i in range(0, len(y), self.batch_size):
                j = order[i:i + self.batch_size]
                yield X[j], y[j]
            epoch += 1

    def loss(self, model: nn.Module, batch) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(model(x), y)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str = "test") -> float:
        X, y = self._data()[split]
        was = model.training
        model.eval()
        acc = float((model(X).argmax(1) == y).float().mean()) * 100
        model.train(was)
        return acc

    def calibration(self) -> torch.Tensor:
        return self._data()["train"][0]

    def default_schedule(self) -> TrainSchedule:
        return TrainSchedule("step", self.lr, self.epochs * self.steps_per_epoch(), milestones=(0.5, 0.75), gamma=0.1)

    def default_optimizer(self) -> OptimizerSpec:
        return OptimizerSpec("sgd", momentum=0.9, weight_decay=1e-4, nesterov=True)

    def describe(self) -> dict:
        d = self._data()
        return super().describe() | {"arch": self.arch, "hidden": list(self.hidden), "batch_size": self.batch_size,
                                     "n_train": len(d["train"][1]), "n_val": len(d["val"][1]),
                                     "n_test": len(d["test"][1])}
