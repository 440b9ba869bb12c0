"""Sparse Model Soups (SMS): IMP where every retraining phase trains m copies and averages them.

Phase p: prune the current model (the previous soup) to s_p → mask M_p; retrain m copies of the
pruned model, each with its own seed (batch order) and optionally its own weight decay, for the
phase budget T with the retraining schedule; check every copy kept M_p; average (uniform or
greedy soup, see :mod:`maskopt.train.soup`); check the soup kept M_p; the soup starts phase p+1.
Compute per phase: m·T steps (the copies run in parallel processes).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

from torch import nn

from .budget import Budget
from .checkpoint import LastGood
from .errors import NonFiniteLossError
from .imp import begin_phase
from .masking import check_sparsities, current_masks
from .optim import OptimizerSpec
from .parallel import CopyJob, retrain_copies
from .pruners import Pruner
from .schedules import RETRAIN_SCHEDULES, TrainSchedule
from .soup import assert_mask_preserved, check_masks, greedy_soup, uniform_soup
from .workloads.base import Workload

SOUPS = ("uniform", "greedy")


@dataclass
class SMSConfig:
    sparsities: Sequence[float]
    retrain: Budget | str | int
    copies: int = 3
    soup: str = "uniform"  # which soup starts the next phase
    schedule: str = "LLR"
    pruner: Pruner = field(default_factory=Pruner)
    optimizer: OptimizerSpec | None = None
    weight_decays: Sequence[float] | None = None  # one per copy (None: the optimizer's for all)
    seed: int = 0
    workers: int = 2
    threads: int = 1
    start_method: str | None = None  # None: 'fork' on Linux, else 'spawn'

    def __post_init__(self) -> None:
        self.sparsities = check_sparsities(self.sparsities)
        self.retrain = Budget.parse(self.retrain)
        if self.copies < 1:
            raise ValueError(f"copies must be ≥ 1, got {self.copies}")
        if self.soup not in SOUPS:
            raise ValueError(f"soup must be one of {SOUPS}, got {self.soup!r}")
        if self.schedule not in RETRAIN_SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(RETRAIN_SCHEDULES)}, got {self.schedule!r}")
        if self.weight_decays is not None and len(self.weight_decays) != self.copies:
            raise ValueError(f"give one weight decay per copy ({self.copies}), got {len(self.weight_decays)}")

    def jobs(self, phase: int) -> list[CopyJob]:
        wds = self.weight_decays or [None] * self.copies
        return [CopyJob(i, self.seed + 1000 * phase + 17 * i, wds[i]) for i in range(self.copies)]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["retrain"] = str(self.retrain)
        return d


def run_sms(model: nn.Module, workload: Workload, config: SMSConfig, original: TrainSchedule | None = None, *,
            guard: LastGood | None = None, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run SMS in place on a trained ``model`` (it ends as the last phase's soup); returns per-phase rows."""
    original = original or workload.default_schedule()
    T = config.retrain.steps(workload.steps_per_epoch())
    opt_spec = config.optimizer or workload.default_optimizer()
    guard = guard or LastGood()
    if guard.state is None:
        guard.save(model, current_masks(workload.prunable(model)), label="dense model before SMS")
    names = list(workload.prunable(model))
    better = workload.better
    phases = []
    for p, s in enumerate(config.sparsities, start=1):
        t0 = time.time()
        masks, stats, pruned_metric, sched = begin_phase(model, workload, config.pruner, s, config.schedule, T, original)
        try:
            results = retrain_copies(workload, model.state_dict(), masks, sched, opt_spec, config.jobs(p),
                                     workers=config.workers, threads=config.threads, label=f"SMS phase {p}",
                                     start_method=config.start_method)
        except NonFiniteLossError as e:
            guard.restore(model)
            raise NonFiniteLossError(f"{e} (SMS kept the last good checkpoint: {guard.describe()})", phase=p) from e
        states = [r["state"] for r in results]
        check_masks(states, names, masks)
        uni = uniform_soup(states)

        def score(st) -> float:
            model.load_state_dict(st)
            return workload.evaluate(model, "val")

        uni_val = score(uni)
        uni_test = workload.evaluate(model, "test")
        greedy, chosen, greedy_val = greedy_soup(states, score, workload.higher_is_better, [r["val"] for r in results])
        model.load_state_dict(greedy)
        greedy_test = workload.evaluate(model, "test")
        nxt = uni if config.soup == "uniform" else greedy
        assert_mask_preserved(nxt, masks)
        model.load_state_dict(nxt)
        tests = [r["test"] for r in results]
        best = tests[0]
        for v in tests[1:]:
            best = v if better(v, best) else best
        row = {"phase": p, "sparsity": s, **stats, f"{workload.metric}_pruned": pruned_metric,
               "ingredients_test": tests, "ingredients_val": [r["val"] for r in results],
               "best_ingredient_test": best, "mean_ingredient_test": sum(tests) / len(tests),
               "uniform_soup_test": uni_test, "uniform_soup_val": uni_val, "greedy_soup_test": greedy_test,
               "greedy_soup_val": greedy_val, "greedy_chosen": chosen, "next": config.soup,
               "lr_peak": sched.peak, "steps_per_copy": T, "steps_total": sum(r["steps"] for r in results),
               "seconds": time.time() - t0}
        phases.append(row)
        guard.save(model, masks, label=f"SMS phase {p} soup (sparsity {s})", phases=phases)
        if log:
            log(f"phase {p}: sparsity {stats['measured_sparsity']:.4f}; copies {', '.join(f'{v:.3f}' for v in tests)}"
                f"; uniform soup {uni_test:.3f}; greedy soup {greedy_test:.3f} (chose {chosen})")
    return {"phases": phases, "retrain_steps_total": sum(r["steps_total"] for r in phases),
            "config": config.to_dict()}
