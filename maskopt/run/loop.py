"""The stage loop: a list of stages over one shared context, resumable after every finished block.

``run_stages(stages, ctx, checkpoint)`` is the whole control flow of a run: restore from the checkpoint
when one of the same run exists, then each stage in order; walking stages save the checkpoint after
every block (through ``ctx.walker_options()``), the runner after every stage.
"""
from __future__ import annotations

from ..report import RunReport, peak_memory_mb, versions
from ..stages import Stage
from .checkpoint import Checkpoint, ResumePoint
from .context import RunContext


def run_stages(stages: list[Stage], ctx: RunContext, checkpoint: Checkpoint | None = None) -> RunReport:
    """Run ``stages`` in order on ``ctx``; with ``checkpoint``, resume from it and keep it current."""
    start = ResumePoint(0)
    if checkpoint is not None and checkpoint.load() is not None:
        start, masks = checkpoint.restore(ctx.model, ctx.adapter, streamed=ctx.stream is not None)
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
