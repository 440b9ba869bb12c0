"""Iterative magnitude pruning (IMP) with a retraining schedule, and budgeted IMP (BIMP).

IMP (Han et al. 2015) from a trained dense model θ: for each target sparsity s_1 < s_2 < … < s_P,
prune to s_p (pruned weights stay zero) and retrain for a budget of T steps with schedule
FT / LRW / SLR / CLR / LLR / ALLR (see :mod:`maskopt.train.schedules`). Total retraining: exactly P·T steps.

BIMP (Zimmer, Spiegel, Pokutta 2023): one budget B for everything; the dense model is trained from
scratch for B − P·T steps with a linearly decaying lr (budgeted training), then IMP with ALLR
(by default) for P phases of T steps: exactly B steps in total.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

from torch import nn

from .budget import Budget
from .checkpoint import LastGood
from .errors import BudgetError
from .loop import train_steps
from .masking import Masks, check_sparsities, current_masks, prune_stats, sparsity_of
from .optim import OptimizerSpec
from .pruners import Pruner
from .schedules import RETRAIN_SCHEDULES, RetrainSchedule, TrainSchedule, allr_initial_lr
from .workloads.base import Workload

Log = Callable[[str], None]


@dataclass
class IMPConfig:
    """Targets ``sparsities`` (strictly increasing), ``retrain`` budget per phase ('3ep', '200' steps …),
    retraining ``schedule``, the pruning step ``pruner`` and the retraining ``optimizer``
    (default: the workload's). ``seed`` fixes the batch order."""

    sparsities: Sequence[float]
    retrain: Budget | str | int
    schedule: str = "LLR"
    pruner: Pruner = field(default_factory=Pruner)
    optimizer: OptimizerSpec | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        self.sparsities = check_sparsities(self.sparsities)
        self.retrain = Budget.parse(self.retrain)
        if self.schedule not in RETRAIN_SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(RETRAIN_SCHEDULES)}, got {self.schedule!r}")

    def retrain_steps(self, workload: Workload) -> int:
        return self.retrain.steps(workload.steps_per_epoch())

    def to_dict(self) -> dict:
        d = asdict(self)
        d["retrain"] = str(self.retrain)
        return d


def prune_phase(model: nn.Module, workload: Workload, pruner: Pruner, sparsity: float) -> tuple[Masks, dict]:
    """Prune in place to ``sparsity``; returns the masks and {rel_norm_drop, phase_sparsity, measured_sparsity}."""
    weights = workload.prunable(model)
    before = {n: w.detach().clone() for n, w in weights.items()}
    masks = pruner(model, weights, sparsity, workload.calibration)
    stats = prune_stats(before, weights) | {"measured_sparsity": sparsity_of(masks)}
    return masks, stats


def begin_phase(model: nn.Module, workload: Workload, pruner: Pruner, sparsity: float, schedule: str, steps: int,
                original: TrainSchedule) -> tuple[Masks, dict, float, RetrainSchedule]:
    """Prune for one phase and plan its retraining: (masks, stats, metric right after pruning, lr schedule)."""
    masks, stats = prune_phase(model, workload, pruner, sparsity)
    return masks, stats, workload.evaluate(model, "test"), retrain_schedule(schedule, steps, original, stats)


def retrain_schedule(name: str, steps: int, original: TrainSchedule, stats: dict) -> RetrainSchedule:
    allr = None
    if name == "ALLR":
        allr = allr_initial_lr(original, steps, stats["rel_norm_drop"], max(stats["phase_sparsity"], 1e-12))
    return RetrainSchedule(name, steps, original, allr)


def run_imp(model: nn.Module, workload: Workload, config: IMPConfig, original: TrainSchedule | None = None, *,
            guard: LastGood | None = None, log: Log | None = None) -> dict[str, Any]:
    """Run IMP in place on a trained ``model``; returns {'phases': [...], 'retrain_steps_total', 'config'}.

    Each phase row: target and measured sparsity, metric after pruning and after retraining (test and
    val), the schedule's first and peak lr, steps and seconds. After every phase the model is the
    last good checkpoint.
    """
    original = original or workload.default_schedule()
    T = config.retrain_steps(workload)
    opt_spec = config.optimizer or workload.default_optimizer()
    if guard is not None and guard.state is None:
        guard.save(model, current_masks(workload.prunable(model)), label="dense model before IMP")
    phases = []
    for p, s in enumerate(config.sparsities, start=1):
        t0 = time.time()
        masks, stats, pruned_metric, sched = begin_phase(model, workload, config.pruner, s, config.schedule, T, original)
        opt = opt_spec.build(model.parameters(), sched(0))
        tr = train_steps(model, workload, opt, sched, T, seed=config.seed + 1000 * p, masks=masks, guard=guard,
                         label=f"IMP phase {p} ({config.schedule}, sparsity {s})")
        assert sparsity_of(current_masks(workload.prunable(model))) >= stats["measured_sparsity"] - 1e-12
        row = {"phase": p, "sparsity": s, **stats, "schedule": config.schedule, "lr_peak": sched.peak,
               f"{workload.metric}_pruned": pruned_metric, workload.metric: workload.evaluate(model, "test"),
               f"val_{workload.metric}": workload.evaluate(model, "val"), "steps": tr["steps"],
               "loss_last": tr["loss_last"], "seconds": time.time() - t0}
        phases.append(row)
        if guard is not None:
            guard.save(model, masks, label=f"IMP phase {p} (sparsity {s})", phases=phases)
        if log:
            log(f"phase {p}: sparsity {row['measured_sparsity']:.4f}, {workload.metric} after pruning "
                f"{pruned_metric:.3f}, after {T} retraining steps ({config.schedule}, peak lr {sched.peak:.3g}) "
                f"{row[workload.metric]:.3f}")
    total = sum(r["steps"] for r in phases)
    if total != T * len(config.sparsities):
        raise AssertionError(f"retraining took {total} steps, budget {T} × {len(config.sparsities)}")
    return {"phases": phases, "retrain_steps_per_phase": T, "retrain_steps_total": total, "config": config.to_dict()}


def bimp_split(workload: Workload, total: Budget | str, config: IMPConfig) -> tuple[int, int]:
    """(dense steps, retraining steps per phase) of BIMP with total budget ``total``; dense ≥ 1 step."""
    B = Budget.parse(total).steps(workload.steps_per_epoch())
    T = config.retrain_steps(workload)
    dense = B - T * len(config.sparsities)
    if dense < 1:
        raise BudgetError(f"BIMP: total budget {B} steps leaves {dense} steps for dense training after "
                          f"{len(config.sparsities)} phases × {T} retraining steps; raise the total or lower retrain")
    return dense, T


def run_bimp(workload: Workload, config: IMPConfig, total: Budget | str, *, lr: float | None = None,
             model: nn.Module | None = None, guard: LastGood | None = None, log: Log | None = None
             ) -> tuple[nn.Module, dict[str, Any]]:
    """BIMP from scratch: dense training with linear lr decay for B − P·T steps, then IMP; exactly B steps.

    Returns (the pruned model, the IMP summary plus dense_steps, dense_metric, total_steps, budget_steps).
    """
    dense_steps, T = bimp_split(workload, total, config)
    model = model if model is not None else workload.build_model(config.seed)
    base = workload.default_schedule()
    original = TrainSchedule("linear", lr or base.max_lr, dense_steps)
    opt = (config.optimizer or workload.default_optimizer()).build(model.parameters(), original(0))
    dense = train_steps(model, workload, opt, original, dense_steps, seed=config.seed, guard=guard,
                        label="BIMP dense training")
    dense_metric = workload.evaluate(model, "test")
    if guard is not None:
        guard.save(model, label="BIMP dense model", steps=dense_steps)
    if log:
        log(f"BIMP dense: {dense_steps} steps, {workload.metric} {dense_metric:.3f}")
    res = run_imp(model, workload, config, original, guard=guard, log=log)
    res.update(dense_steps=dense_steps, dense_metric=dense_metric, dense_seconds=dense["seconds"],
               total_steps=dense_steps + res["retrain_steps_total"], budget_steps=Budget.parse(total).steps(
                   workload.steps_per_epoch()))
    if res["total_steps"] != res["budget_steps"]:
        raise AssertionError(f"BIMP used {res['total_steps']} steps of a budget of {res['budget_steps']}")
    return model, res
