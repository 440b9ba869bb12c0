"""Retrain m copies of one pruned model as independent jobs, in parallel processes.

Each job gets the workload (a picklable recipe), the pruned state, the mask, the schedule and its
own seed (batch order) and weight decay; it returns its retrained state and metrics. ``workers=0``
runs the jobs one after the other in this process (same code path, for tests and debugging).
Processes are started with ``start_method``: 'fork' by default on Linux (as torch's DataLoader
workers; no re-import, so a job starts in milliseconds), 'spawn' elsewhere or on request.
Each process uses ``threads`` torch threads.
"""
from __future__ import annotations

import concurrent.futures as cf
from dataclasses import dataclass
from typing import Any, Mapping

import torch

from .loop import train_steps
from .optim import OptimizerSpec
from .schedules import RetrainSchedule
from .workloads.base import Workload


@dataclass(frozen=True)
class CopyJob:
    index: int
    seed: int
    weight_decay: float | None = None  # None: the optimizer's


def _retrain_copy(workload: Workload, state: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor],
                  schedule: RetrainSchedule, optimizer: OptimizerSpec, job: CopyJob, threads: int | None,
                  label: str) -> dict[str, Any]:
    if threads:
        torch.set_num_threads(threads)
    model = workload.build_model(job.seed)
    model.load_state_dict(state)
    spec = optimizer if job.weight_decay is None else OptimizerSpec(optimizer.name, optimizer.momentum,
                                                                    job.weight_decay, optimizer.nesterov)
    opt = spec.build(model.parameters(), schedule(0))
    summary = train_steps(model, workload, opt, schedule, schedule.steps, seed=job.seed, masks=masks,
                          label=f"{label} copy {job.index}")
    return {"index": job.index, "seed": job.seed, "weight_decay": spec.weight_decay,
            "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "val": workload.evaluate(model, "val"), "test": workload.evaluate(model, "test"),
            "steps": summary["steps"], "seconds": summary["seconds"], "loss_last": summary["loss_last"]}


def retrain_copies(workload: Workload, state: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor],
                   schedule: RetrainSchedule, optimizer: OptimizerSpec, jobs: list[CopyJob], *, workers: int = 0,
                   threads: int | None = 1, label: str = "retraining", start_method: str | None = None
                   ) -> list[dict[str, Any]]:
    """Results of all jobs, in job order. Any failing job (e.g. a non-finite loss) re-raises here."""
    state = {k: v.detach().cpu() for k, v in state.items()}
    masks = {k: v.detach().cpu() for k, v in masks.items()}
    if workers <= 0:
        return [_retrain_copy(workload, state, masks, schedule, optimizer, j, None, label) for j in jobs]
    import multiprocessing  # noqa: PLC0415

    method = start_method or ("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    ctx = torch.multiprocessing.get_context(method)
    with cf.ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx) as pool:
        futures = [pool.submit(_retrain_copy, workload, state, masks, schedule, optimizer, j, threads, label)
                   for j in jobs]
        return [f.result() for f in futures]
