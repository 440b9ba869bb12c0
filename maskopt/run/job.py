"""A run: load what the stages need, run them (resumable), clean up. The CLI and the Python API only build
stage lists; this is the one place that sets a run up.

    run_job(stages, JobInputs(model=..., calib=[...]), out=OUT)        # from files, with an output folder
    run_on(stages, model, tokenizer, calibration)                      # on a model already in memory
    prune(model, calibration, PruneConfig(...), tokenizer=tok)         # run_on([PruneStage(config)], ...)

Checks that can fail without a model (output folder, options) come first; then the model is loaded,
the calibration windows made, a dense reference kept or loaded when a stage needs one, and the stages
run with a checkpoint next to the output so that re-running the same command after a crash resumes.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from .. import distributed
from ..config import PruneConfig
from ..data import make_windows
from ..io import MASKS_FILE, file_digest, load_masks, tensor_digest
from ..model.adapters import get_adapter
from ..model.loading import checkpoint_dtype, load_config, load_model, resolve_dtype
from ..report import RunReport
from ..stages import Stage
from .checkpoint import Checkpoint
from .context import RunContext
from .device import check_finite_weights, resolve_device
from .loop import run_stages
from ..model.streaming import PackedMasks
from .output import check_dir, clean_stale

Log = Callable[[str], None]


@dataclass
class JobInputs:
    """Where the model and texts come from, and how to run."""

    model: str | Path  # the model to change: a dense model (prune) or a pruned folder (recover, certify)
    calib: Sequence[str | Path] | torch.Tensor = ()  # text files / dataset names, or ready (n × L) token windows
    nsamples: int = 128
    seqlen: int | None = None
    seed: int = 0
    device: str | None = None
    batch_size: int = 8
    offload: bool = True
    dense: str | Path | None = None  # the dense model, when ``model`` is a pruned folder
    trust_remote_code: bool = False
    progress: bool = True
    eval_texts: Sequence[str | Path] = field(default_factory=list)  # recorded with hashes in the report
    recipe: dict | None = None  # the run written as a recipe (maskopt.recipe), recorded in the report
    warm_from: str | Path | None = None  # a model pruned elsewhere whose zeros are the masks to polish (existing)
    stream: bool = False  # read one decoder block at a time from the checkpoint (a model larger than memory)
    dtype: str = "auto"  # the dtype the model is loaded and run in: auto (the checkpoint's own) | bfloat16 | float16 | float32
    save_dtype: str = "auto"  # the dtype of the saved model: auto (the checkpoint's own) | bfloat16 | float16 | float32

    def paths(self) -> tuple:
        """Everything the job reads from disk (an output may never be, lie in, or hold one of these)."""
        calib = [] if isinstance(self.calib, torch.Tensor) else list(self.calib)
        return tuple(p for p in (self.model, self.dense, self.warm_from, *calib, *self.eval_texts) if p is not None)


def _describe_path(p: str | Path) -> dict:
    path = Path(p).expanduser()
    if path.is_file():
        return {"path": str(path.resolve()), "sha256": file_digest(path), "bytes": path.stat().st_size}
    if path.is_dir():
        return {"path": str(path.resolve())}
    return {"name": str(p)}  # a hub id or dataset name


def _fingerprint(stages: Sequence[Stage], model_digest: str, windows: torch.Tensor | None, device: torch.device,
                 extra: dict) -> str:
    from .._version import __version__  # noqa: PLC0415

    payload = {"stages": [s.spec() for s in stages if s.name != "save"], "model": model_digest,
               "windows": tensor_digest([("w", windows)]) if windows is not None else None,
               "device": device.type, "maskopt": __version__, **extra}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def context(stages: Sequence[Stage], model: nn.Module, tokenizer, inputs: JobInputs, *, dense: nn.Module | None = None,
            masks: dict[str, torch.Tensor] | None = None, report: RunReport | None = None,
            out: str | Path | None = None, log: Log = print) -> RunContext:
    """The shared context of ``stages`` on ``model``: adapter, weight checks, device, calibration windows, the
    dense reference (``dense``, else a copy of the still-dense model) when a stage needs one, the report."""
    device = distributed.local_device(resolve_device(inputs.device))
    adapter = get_adapter(model)
    if not inputs.stream:  # a streamed model's blocks are checked as they are read
        check_finite_weights(model, adapter)
    windows = None
    if any(s.needs_windows for s in stages):
        calib = inputs.calib if isinstance(inputs.calib, torch.Tensor) else list(inputs.calib)
        windows = make_windows(calib, tokenizer, model, inputs.nsamples, inputs.seqlen, inputs.seed)
    if any(s.needs_dense for s in stages):
        if dense is None:
            dense = copy.deepcopy(model)  # the model is still dense here: keep it as the reference
        elif get_adapter(dense) is not adapter:
            raise ValueError(f"the dense model {inputs.dense} is not of the same family as {inputs.model}")
    else:
        dense = None
    report = report or RunReport(config={}, model=str(inputs.model))
    previous = report.inputs
    from_files = not isinstance(inputs.calib, torch.Tensor)
    report.inputs = {
        "model": _describe_path(inputs.model), "dense": _describe_path(inputs.dense) if inputs.dense else None,
        "calibration": [_describe_path(c) for c in inputs.calib] if windows is not None and from_files else [],
        "nsamples": int(windows.shape[0]) if windows is not None else None,
        "seqlen": int(windows.shape[1]) if windows is not None else None, "seed": inputs.seed,
        "eval_texts": [_describe_path(t) for t in inputs.eval_texts], "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(), "stages": [s.spec() for s in stages], "command": sys.argv,
        "recipe": inputs.recipe,
    }
    if previous:
        report.inputs["previous_run"] = previous
    return RunContext(model, tokenizer, adapter, device, report, windows=windows, dense=dense,
                      masks=masks if masks is not None else {},  # an empty PackedMasks stays packed
                      batch_size=inputs.batch_size, offload=inputs.offload, progress=inputs.progress, log=log,
                      out=Path(out) if out is not None else None, input_paths=inputs.paths())


def _files_digest(reader) -> str:
    return hashlib.sha256("".join(file_digest(f) for f in reader.shard_files()).encode()).hexdigest()


def _dense_stream(path: str | Path, inputs: JobInputs, dtype: torch.dtype):
    """The dense reference as a StreamedModel (its blocks read from its checkpoint when a walk needs them, never a
    copy of the whole model), when ``path`` is a local safetensors folder; None otherwise (a GGUF or a hub id:
    the reference is then loaded or copied whole)."""
    from ..model.streaming import StreamedModel  # noqa: PLC0415

    p = Path(path)
    if not (p.is_dir() and (p / "config.json").is_file() and any(p.glob("*.safetensors"))):
        return None
    config, kwargs, folder = load_config(p, trust_remote_code=inputs.trust_remote_code)
    if "gguf_file" in kwargs or getattr(config, "auto_map", None):
        return None
    return StreamedModel(folder, config, dtype)


STREAMED_STAGES = ("prune", "save", "evaluate")


def _streamed(stages: Sequence[Stage], inputs: JobInputs, config, kwargs: dict, path: Path):
    """(StreamedModel, tokenizer) of a run that reads one block at a time; what it cannot do yet is refused here:
    a streamed run prunes and saves, or evaluates the model as it is on disk."""
    from transformers import AutoTokenizer  # noqa: PLC0415

    from ..model.streaming import StreamedModel  # noqa: PLC0415

    names = [s.name for s in stages]
    other = [n for n in names if n not in STREAMED_STAGES]
    if other:
        raise ValueError(f"--stream runs prune, save and evaluate; {other[0]!r} needs the whole model in memory "
                         "(recover the saved folder afterwards)")
    if "prune" in names and "evaluate" in names:
        raise ValueError("--stream evaluates a model as it is on disk, not while pruning it: prune with --no-eval, "
                         "then `maskopt eval OUT --stream`")
    if "prune" in names and "save" not in names and distributed.is_main():
        raise ValueError("--stream writes its result as it goes: it needs an output folder (--out)")
    if "gguf_file" in kwargs:
        raise ValueError("--stream reads safetensors checkpoints; a .gguf is dequantized whole (convert it first)")
    if inputs.warm_from is not None or inputs.dense is not None:
        raise ValueError("--stream does not take a second model (--dense / warm_start=existing) yet")
    tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=inputs.trust_remote_code)
    return StreamedModel(path, config, resolve_dtype(inputs.dtype, config)), tokenizer


def existing_masks(path: str | Path, model: nn.Module, inputs: JobInputs) -> dict[str, torch.Tensor]:
    """The zeros of a model pruned elsewhere, by layer name (rows × d, True = kept), checked against ``model``."""
    pruned, _ = load_model(path, trust_remote_code=inputs.trust_remote_code, progress=inputs.progress)
    adapter = get_adapter(model)
    if get_adapter(pruned) is not adapter:
        raise ValueError(f"{path} is not of the same family as the dense model {inputs.model}")
    mine, theirs = adapter.named_linears(model), adapter.named_linears(pruned)
    out = {}
    for name, m in mine.items():
        if name not in theirs or adapter.get_weight(theirs[name]).shape != adapter.get_weight(m).shape:
            raise ValueError(f"{path} does not have the shape of the dense model {inputs.model} at {name}")
        out[name] = adapter.get_weight(theirs[name]) != 0
    del pruned
    return out


def run_job(stages: list[Stage], inputs: JobInputs, *, out: str | Path | None = None, resume: bool = True,
            report: RunReport | None = None, log: Log = print) -> RunReport:
    """Run ``stages`` on the model of ``inputs``; a save stage writes ``out``. Returns the report."""
    if distributed.init_from_env() and not distributed.is_main():
        # torchrun: the ranks share the rows of every layer while pruning; what follows the last prune stage
        # (recovery, evaluation, writing) runs once, on rank 0
        last = max((i for i, s in enumerate(stages) if s.name == "prune"), default=-1)
        stages = [s for s in stages[: last + 1] if not s.main_rank_only]
        log, inputs = (lambda _m: None), dataclasses.replace(inputs, progress=False)
    saves = [s for s in stages if s.name == "save"]
    if saves:
        out = check_dir(out, saves[-1].options.overwrite, inputs.paths())
        stale = clean_stale(out)
        if stale:
            print(f"removed {len(stale)} temporary folder(s) left by an interrupted earlier run: "
                  + ", ".join(p.name for p in stale), file=sys.stderr)
    resolve_device(inputs.device)
    resolve_dtype(inputs.dtype)
    resolve_dtype(inputs.save_dtype)
    model_path = Path(inputs.model)
    config, kwargs, path = load_config(inputs.model, trust_remote_code=inputs.trust_remote_code)
    own = torch.float32 if "gguf_file" in kwargs else checkpoint_dtype(config)  # a GGUF is dequantized to float32
    stream = None
    if inputs.stream:
        stream, tokenizer = _streamed(stages, inputs, config, kwargs, path)
        model = stream.model
        model_digest = _files_digest(stream.reader)
    else:
        model, tokenizer = load_model(inputs.model, resolve_dtype(inputs.dtype, config) if "gguf_file" not in kwargs
                                      else resolve_dtype(inputs.dtype), trust_remote_code=inputs.trust_remote_code,
                                      progress=inputs.progress)
        model_digest = tensor_digest(model.state_dict().items())
    dense = dense_stream = None
    if any(s.needs_dense for s in stages):
        dtype = stream.dtype if stream is not None else next(model.parameters()).dtype
        if all(s.walks for s in stages if s.needs_dense):  # walked block by block: read one block at a time
            dense_stream = _dense_stream(inputs.dense if inputs.dense is not None else inputs.model, inputs, dtype)
        if dense_stream is not None:
            dense = dense_stream.model
        elif inputs.dense is not None:
            dense = load_model(inputs.dense, dtype, trust_remote_code=inputs.trust_remote_code,
                               progress=inputs.progress)[0]
    masks = PackedMasks(load_masks(model_path / MASKS_FILE) if (model_path / MASKS_FILE).is_file() else {})
    ctx = context(stages, model, tokenizer, inputs, dense=dense, masks=masks, report=report, out=out, log=log)
    ctx.stream, ctx.dense_stream = stream, dense_stream
    ctx.report.inputs["dense_streamed"] = dense_stream is not None
    ctx.save_dtype = resolve_dtype(inputs.save_dtype) if inputs.save_dtype != "auto" else own
    ctx.report.inputs.update(dtype=str(next(model.parameters()).dtype).replace("torch.", ""),
                             checkpoint_dtype=str(own).replace("torch.", ""))
    if inputs.warm_from is not None:
        ctx.warm_masks = existing_masks(inputs.warm_from, model, inputs)
        ctx.report.inputs["warm_from"] = _describe_path(inputs.warm_from)
    checkpoint = None
    if saves:
        dense_digest = (_files_digest(dense_stream.reader) if dense_stream is not None
                        else tensor_digest(dense.state_dict().items()) if dense is not None else None)
        warm_digest = tensor_digest(sorted(ctx.warm_masks.items())) if ctx.warm_masks else None
        checkpoint = Checkpoint(out, _fingerprint(stages, model_digest, ctx.windows, ctx.device,
                                                  {"dense": dense_digest, "warm": warm_digest}))
        if not resume:
            checkpoint.clear()
    result = run_stages(stages, ctx, checkpoint)
    if checkpoint is not None:
        checkpoint.clear()
    return result


def run_on(stages: list[Stage], model: nn.Module, tokenizer=None, calibration=None, *, dense: nn.Module | None = None,
           masks: dict[str, torch.Tensor] | None = None, report: RunReport | None = None, out: str | Path | None = None,
           log: Log = print, **settings) -> RunReport:
    """Run ``stages`` on a model already in memory (changed in place); ``calibration``: token windows
    (n × L tensor) or text file(s) / dataset name(s) with ``tokenizer``; ``settings``: fields of JobInputs
    (nsamples, seqlen, seed, device, batch_size, offload, progress); ``masks``: explicit masks by layer name
    (e.g. an earlier report's ``masks``), kept exactly by recovery. A save stage writes ``out`` (checked first);
    without one nothing is written."""
    saves = [s for s in stages if s.name == "save"]
    if saves:
        check_dir(out, saves[-1].options.overwrite)
        clean_stale(out)
    name = getattr(getattr(model, "config", None), "_name_or_path", "") or "<in memory>"
    inputs = JobInputs(name, calibration if calibration is not None else (), **settings)
    ctx = context(stages, model, tokenizer, inputs, dense=dense, masks=PackedMasks(masks or {}), report=report,
                  out=out, log=log)
    result = run_stages(stages, ctx)
    result.masks = ctx.masks
    return result


def prune(model: nn.Module, calibration, config: PruneConfig | None = None, *, tokenizer=None) -> RunReport:
    """Prune ``model`` in place, block by block; return the per-layer report (with ``report.masks``).

    ``calibration``: token windows (n × L tensor), or text file(s)/dataset name(s) with ``tokenizer``.
    The caller's ``config`` is not changed.
    """
    from ..stages.prune import PruneStage  # noqa: PLC0415

    config = dataclasses.replace(config) if config is not None else PruneConfig()
    calib = calibration if isinstance(calibration, (torch.Tensor, list, tuple)) else [calibration]
    return run_on([PruneStage(config)], model, tokenizer, calib, nsamples=config.nsamples,
               seqlen=config.seqlen, seed=config.seed, device=config.device, batch_size=config.batch_size,
               offload=config.offload, progress=config.progress)
