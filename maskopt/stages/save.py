"""The save stage: the model as a Hugging Face folder with its report and explicit masks, atomically."""
from __future__ import annotations

from dataclasses import dataclass

from ..io import MASKS_FILE, save_masks, write_model
from ..model.loading import as_dtype, quiet_loading
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
            if ctx.stream is not None:
                write_streamed(ctx, tmp)
            else:
                with quiet_loading(ctx.progress), as_dtype(ctx.model, ctx.save_dtype):
                    write_model(ctx.model, ctx.tokenizer, tmp)
            if ctx.masks:
                save_masks(ctx.masks, tmp / MASKS_FILE)
            ctx.report.wall_seconds = ctx.elapsed()
            ctx.report.peak_memory_mb = peak_memory_mb()
            ctx.report.versions = versions()
            write_report(ctx.report, tmp)
        ctx.log(f"model, masks and report written to {ctx.out} (maskopt_report.md)")


def write_streamed(ctx, folder) -> None:
    """The model of a streamed run as a sharded HF checkpoint: one shard per decoder block, read back from the run's
    checkpoint (where each pruned block went when its step ended), one for everything else, and the index."""
    import json  # noqa: PLC0415

    from safetensors.torch import save_file  # noqa: PLC0415

    from ..run.checkpoint import block_state  # noqa: PLC0415

    stream, ckpt = ctx.stream, ctx.checkpoint
    if ckpt is None:
        raise RuntimeError("a streamed run writes its blocks through its checkpoint, and this run has none")
    dtype = ctx.save_dtype or stream.dtype
    n = len(stream.adapter.get_blocks(stream.model))
    cast = {k: v for k, v in stream.non_block_state().items()}
    if getattr(stream.model.config, "tie_word_embeddings", False):
        cast = {k: v for k, v in cast.items() if not k.endswith("lm_head.weight")}
    weight_map, total = {}, 0

    def write(tensors: dict, name: str) -> None:
        nonlocal total
        tensors = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in tensors.items()}
        save_file(tensors, str(folder / name), metadata={"format": "pt"})
        for k, v in tensors.items():
            weight_map[k] = name
            total += v.numel() * v.element_size()

    for i in range(n):
        state = block_state(ckpt.dir, ckpt.state, i)
        if state is None:
            raise RuntimeError(f"block {i} was never written to the run's checkpoint: nothing to save for it")
        write({stream.block_prefix(i) + k: v for k, v in state.items()}, f"model-{i + 1:05d}-of-{n + 1:05d}.safetensors")
    write(cast, f"model-{n + 1:05d}-of-{n + 1:05d}.safetensors")
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, indent=2) + "\n")
    config = stream.model.config
    config.dtype = str(dtype).replace("torch.", "")
    config.save_pretrained(folder)
    if getattr(stream.model, "generation_config", None) is not None:
        stream.model.generation_config.save_pretrained(folder)
    if ctx.tokenizer is not None:
        ctx.tokenizer.save_pretrained(folder)
