"""Dense training: normal (SGD/AdamW on a schedule) or compression-aware (SFW), and one-shot pruning curves."""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from torch import nn

from .budget import Budget
from .checkpoint import LastGood
from .constraints import KINDS
from .loop import train_steps
from .masking import check_sparsities, sparsity_of
from .optim import OptimizerSpec
from .pruners import Pruner
from .schedules import TrainSchedule
from .sfw import SFW, sfw_param_groups
from .workloads.base import Workload


def train_dense(model: nn.Module, workload: Workload, schedule: TrainSchedule, optimizer: OptimizerSpec | None = None,
                *, seed: int = 0, guard: LastGood | None = None) -> dict[str, Any]:
    """Train ``model`` for ``schedule.steps`` steps with lr ``schedule(t)`` (the initial state is the last good one
    until training finishes)."""
    if guard is not None and guard.state is None:
        guard.save(model, label="initial model")
    opt = (optimizer or workload.default_optimizer()).build(model.parameters(), schedule(0))
    out = train_steps(model, workload, opt, schedule, schedule.steps, seed=seed, guard=guard, label="dense training")
    if guard is not None:
        guard.save(model, label="dense model", steps=schedule.steps)
    return out


@dataclass
class SFWConfig:
    """Compression-aware SFW training: region ``kind`` (k-support ball by default) on every weight matrix
    with sparsity parameter ``k`` (fraction or count), other tensors in an ℓ₂ ball, all radii
    ``width`` × the initial ℓ₂ norm; lr decays by ``schedule`` ('linear', 'constant', 'step', 'cosine')
    from ``lr`` and is rescaled by ``rescale`` ('gradient', 'diameter', 'none')."""

    kind: str = "ksupport"
    k: float = 0.3
    width: float = 10.0
    lr: float = 0.1
    momentum: float = 0.9
    rescale: str = "gradient"
    schedule: str = "linear"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"constraint must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.rescale not in ("gradient", "diameter", "none"):
            raise ValueError(f"rescale must be 'gradient', 'diameter' or 'none', got {self.rescale!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def train_sfw(model: nn.Module, workload: Workload, config: SFWConfig, budget: Budget | str, *, seed: int = 0,
              guard: LastGood | None = None) -> dict[str, Any]:
    """Train ``model`` with SFW for the budget; the prunable weights get ``config.kind`` regions."""
    steps = Budget.parse(budget).steps(workload.steps_per_epoch())
    if guard is not None and guard.state is None:
        guard.save(model, label="initial model")
    names = set(workload.prunable(model))
    groups = sfw_param_groups(model.named_parameters(), config.kind, config.k, config.width, sparse_names=names)
    opt = SFW(groups, lr=config.lr, momentum=config.momentum,
              rescale=None if config.rescale == "none" else config.rescale)
    sched = TrainSchedule(config.schedule, config.lr, steps)
    out = train_steps(model, workload, opt, sched, steps, seed=seed, guard=guard, label="SFW training")
    out["regions"] = {g["name"]: g["constraint"].describe() for g in opt.param_groups if g["name"] in names}
    if guard is not None:
        guard.save(model, label="SFW-trained model", steps=steps)
    return out


def oneshot_curve(model: nn.Module, workload: Workload, sparsities: Sequence[float], pruner: Pruner | None = None
                  ) -> list[dict[str, float]]:
    """Metric of ``model`` pruned one-shot (no retraining) at each sparsity; ``model`` itself is untouched."""
    pruner = pruner or Pruner()
    rows = []
    for s in check_sparsities(sparsities):
        m = copy.deepcopy(model)
        masks = pruner(m, workload.prunable(m), s, workload.calibration)
        rows.append({"sparsity": s, "measured_sparsity": sparsity_of(masks),
                     workload.metric: workload.evaluate(m, "test")})
    return rows
