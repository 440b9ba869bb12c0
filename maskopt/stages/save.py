"""The save stage: the model as a Hugging Face folder with its report and explicit masks, atomically."""
from __future__ import annotations

from dataclasses import dataclass

from ..io import MASKS_FILE, save_masks, write_model
from ..model.loading import quiet_loading
from ..report import peak_memory_mb, versions, write_report
from ..run.output import atomic_dir, output_id
from . import Stage, register_stage


@dataclass
class SaveOptions:
    overwrite: bool = False  # replace an earlier maskopt output folder


@register_stage("save")
class SaveStage(Stage):
    """Write ctx.model (+ tokenizer), maskopt_report.{json,md,png} and maskopt_masks.safetensors to ctx.out.

    Everything goes into a temporary sibling first and replaces ``out`` in one rename at the end."""

    name = "save"
    Options = SaveOptions
    main_rank_only = True

    def run(self, ctx) -> None:
        if ctx.out is None:
            raise ValueError("no output folder given: pass --out DIR")
        ctx.report.output = str(ctx.out)
        with atomic_dir(ctx.out, self.options.overwrite, ctx.input_paths) as tmp:
            ctx.report.output_id = output_id(tmp)
            with quiet_loading(ctx.progress):
                write_model(ctx.model, ctx.tokenizer, tmp)
            if ctx.masks:
                save_masks(ctx.masks, tmp / MASKS_FILE)
            ctx.report.wall_seconds = ctx.elapsed()
            ctx.report.peak_memory_mb = peak_memory_mb()
            ctx.report.versions = versions()
            write_report(ctx.report, tmp)
        ctx.log(f"model, masks and report written to {ctx.out} (maskopt_report.md)")
