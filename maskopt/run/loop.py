"""Runs a list of stages over one shared context, resumable after every finished block.

``run_stages(stages, ctx, checkpoint)`` is the whole control flow of a run: restore from the checkpoint
when one of the same run exists, then each stage in order; walking stages save the checkpoint after
every block (through ``ctx.walker_options()``), the runner after every stage.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .checkpoint import Checkpoint, ResumePoint
from .model.adapters import Adapter
from .model.calibrate import Batch, BlockStep
from .report import RunReport, peak_memory_mb, versions
from .stages import Stage


@dataclass
class RunContext:
    """What the stages of a run share: the model being changed (and a dense reference when a stage needs
    one), tokenizer, device, calibration windows, the explicit masks and the report."""

    model: nn.Module
    tokenizer: Any
    adapter: Adapter
    device: torch.device
    report: RunReport
    windows: torch.Tensor | None = None
    dense: nn.Module | None = None
    masks: dict[str, torch.Tensor] = field(default_factory=dict)  # layer name → mask (parameter layout)
    batch_size: int = 8
    offload: bool = True
    progress: bool = True
    log: Callable[[str], None] = print
    warn: Callable[[str], None] = field(default=lambda m: print(m, file=sys.stderr))  # shown even when quiet
    out: Path | None = None
    input_paths: tuple = ()  # what the run reads: the output may never be or hold one of them
    checkpoint: Checkpoint | None = None
    stage_index: int = 0
    resume: ResumePoint | None = None
    started: float = field(default_factory=time.time)
    prior_seconds: float = 0.0  # wall time of the run before it was resumed

    def elapsed(self) -> float:
        """Wall seconds of the run so far (over resumes)."""
        return self.prior_seconds + time.time() - self.started

    def dense_model(self) -> nn.Module:
        if self.dense is None:
            raise ValueError("this stage needs the dense model (reconstruction targets): pass --dense")
        return self.dense

    def calibration(self) -> torch.Tensor:
        if self.windows is None:
            raise ValueError("this stage needs calibration windows")
        return self.windows

    def module_masks(self) -> dict[nn.Module, torch.Tensor]:
        """The explicit masks by module (for recovery), where known."""
        linears = self.adapter.named_linears(self.model)
        return {linears[n]: m for n, m in self.masks.items() if n in linears}

    def walker_options(self) -> dict[str, Any]:
        """Resume point and per-block checkpoint callback for a walking stage's BlockWalker."""
        opts: dict[str, Any] = {}
        if self.resume is not None and self.resume.block > 0:
            opts.update(start=self.resume.block, resume_hidden=self.resume.hidden,
                        resume_dense_hidden=self.resume.dense_hidden)
        if self.checkpoint is not None:
            opts["on_step_done"] = self._step_done
        return opts

    def _step_done(self, step: BlockStep, inputs: list[Batch], dense_inputs: list[Batch] | None) -> None:
        n_blocks = len(self.adapter.get_blocks(self.model))
        last = step.indices[-1] + 1 >= n_blocks
        self.checkpoint.save_step(
            self.stage_index, step.indices[-1] + 1, dict(zip(step.indices, step.blocks)),
            None if last else [b.hidden for b in inputs],
            None if last or dense_inputs is None else [b.hidden for b in dense_inputs],
            self.masks, self.report.to_dict())


def run_stages(stages: list[Stage], ctx: RunContext, checkpoint: Checkpoint | None = None) -> RunReport:
    """Run ``stages`` in order on ``ctx``; with ``checkpoint``, resume from it and keep it current."""
    start = ResumePoint(0)
    if checkpoint is not None and checkpoint.load() is not None:
        start, masks = checkpoint.restore(ctx.model, ctx.adapter)
        ctx.masks.update(masks)
        if checkpoint.state.get("report"):
            ctx.report = RunReport.from_dict(checkpoint.state["report"])
        where = f"stage {start.stage + 1}/{len(stages)} ({stages[start.stage].name})" if start.stage < len(stages) else "the end"
        ctx.warn(f"resuming from checkpoint {checkpoint.dir}: {where}" + (f", block {start.block}" if start.block else ""))
        ctx.prior_seconds = ctx.report.wall_seconds  # this run's time before the interruption
    else:
        ctx.report.stages = ctx.report.stages + [s.name for s in stages]  # a second run (recover) extends the history
    ctx.checkpoint = checkpoint
    for k, stage in enumerate(stages):
        if k < start.stage:
            continue
        ctx.stage_index = k
        ctx.resume = start if k == start.stage and start.block > 0 else None
        stage.run(ctx)
        ctx.resume = None
        ctx.report.wall_seconds = ctx.elapsed()
        ctx.report.peak_memory_mb = peak_memory_mb()
        if checkpoint is not None and k + 1 < len(stages):
            checkpoint.save_stage_done(k + 1, ctx.model if stage.changes == "all" else None, ctx.masks,
                                       ctx.report.to_dict())
    ctx.report.versions = versions()
    return ctx.report
