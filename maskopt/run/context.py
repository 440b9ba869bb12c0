"""The context the stages of a run share: the model being changed, a dense reference when a stage needs one,
tokenizer, device, calibration windows, explicit masks, the report and the checkpoint."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..model.adapters import Adapter
from ..model.calibrate import Batch, BlockStep
from ..report import RunReport
from .checkpoint import Checkpoint, ResumePoint


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
    warm_masks: dict[str, torch.Tensor] = field(default_factory=dict)  # layer name → existing mask (rows × d) to polish
    save_dtype: torch.dtype | None = None  # the dtype the save stage writes (None: the model's as it is)
    stream: Any = None  # a StreamedModel: ``model`` is its skeleton, blocks are read one walk step at a time
    dense_stream: Any = None  # a StreamedModel of the dense checkpoint: ``dense`` is its skeleton (never a copy)
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
        if self.stream is not None:
            opts["source"] = self.stream
        if self.dense_stream is not None:
            opts["dense_source"] = self.dense_stream
        return opts

    def _step_done(self, step: BlockStep, inputs: list[Batch], dense_inputs: list[Batch] | None) -> None:
        n_blocks = len(self.adapter.get_blocks(self.model))
        last = step.indices[-1] + 1 >= n_blocks
        self.checkpoint.save_step(
            self.stage_index, step.indices[-1] + 1, dict(zip(step.indices, step.blocks)),
            None if last else [b.hidden for b in inputs],
            None if last or dense_inputs is None else [b.hidden for b in dense_inputs],
            self.masks, self.report.to_dict(),
            block_masks={i: {k: m for k, m in self._masks_raw() if k.startswith(f"{self.adapter.blocks}.{i}.")}
                         for i in step.indices})

    def _masks_raw(self):
        """(name, mask) pairs without unpacking packed masks (the checkpoint writes them as they are)."""
        return self.masks.packed_items() if hasattr(self.masks, "packed_items") else self.masks.items()
