"""Recovery as registered stages: ``--recover matrix|subblock|block|blocks|norms_biases|masklora|scalelora``.

Reconstruction stages fit units of the pruned model to the dense model's outputs (walking the blocks,
resumable per block); PERP stages retrain a few parameters on the language-modelling loss (or distil the
dense model's next-token distribution, ``loss=kd``). Both keep
the run's explicit masks exactly.
"""
from __future__ import annotations

import torch

from ..recover.config import PERP_MODES, PERPConfig, ReconstructConfig
from ..recover.perp import perp_retrain
from ..recover.reconstruct import reconstruct
from . import Stage, register_stage

# `maskopt recover` without a stage: MaskLoRA distilled from the dense model (bench/results/defaults.md: out of domain
# it beats MaskLoRA on the language-modelling loss, which learns the retraining text's style); without a dense
# model, MaskLoRA on the language-modelling loss.
RECOMMENDED = "masklora:loss=kd"
RECOMMENDED_NO_DENSE = "masklora"


def train_in_float32(ctx) -> None:
    """Recovery trains weights: a model loaded in bfloat16/float16 is trained in float32 (the save stage writes the
    checkpoint's dtype again)."""
    for m in (ctx.model, ctx.dense):
        if m is not None and next(m.parameters()).dtype != torch.float32:
            ctx.log(f"recovery: training in float32 (the model was loaded in {next(m.parameters()).dtype})")
            m.float()
    if ctx.dense_stream is not None:
        ctx.dense_stream.dtype = torch.float32  # its blocks are read in the training dtype too


class ReconstructStage(Stage):
    """Layer-wise reconstruction towards the dense model (options: ReconstructConfig)."""

    name = "reconstruct"
    Options = ReconstructConfig
    walks = True
    needs_dense = True
    needs_windows = True
    changes = "blocks"

    def run(self, ctx) -> None:
        train_in_float32(ctx)
        res = reconstruct(ctx.model, ctx.dense_model(), ctx.calibration(), self.options, device=ctx.device,
                          batch_size=ctx.batch_size, offload=ctx.offload, progress=ctx.progress,
                          masks=ctx.module_masks(), walker_options=ctx.walker_options())
        ctx.report.recovery[self.name] = res
        ctx.log(f"reconstruction ({self.options.granularity}): mean unit MSE {res['mse_before']:.4g} → "
                f"{res['mse_after']:.4g}")


class PERPStage(Stage):
    """PERP: retrain biases/norms (and optionally sparsity-keeping LoRA) on the LM loss (options: PERPConfig)."""

    name = "perp"
    Options = PERPConfig
    needs_windows = True
    changes = "all"

    @property
    def needs_dense(self) -> bool:  # distillation learns from the dense model
        return self.options.loss == "kd"

    def run(self, ctx) -> None:
        train_in_float32(ctx)
        teacher = ctx.dense_model() if self.options.loss == "kd" else None
        res = perp_retrain(ctx.model, ctx.calibration(), self.options, device=ctx.device, progress=ctx.progress,
                           masks=ctx.module_masks(), teacher=teacher)
        if ctx.offload:
            ctx.model.to("cpu")
            if teacher is not None:
                teacher.to("cpu")
        ctx.report.recovery[self.name] = {k: v for k, v in res.items() if k != "losses"}
        ctx.log(f"PERP ({self.options.mode}): loss {res['loss_first']:.4f} → {res['loss_last']:.4f}")


for _g in ("matrix", "subblock", "subblock_residual", "block", "blocks"):  # one stage name per granularity
    register_stage(_g, kind="recover", granularity=_g)(ReconstructStage)
for _m in PERP_MODES:  # and per PERP mode
    register_stage(_m, kind="recover", mode=_m)(PERPStage)
