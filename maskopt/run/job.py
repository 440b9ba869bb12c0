"""A job: load what the stages need, run them (resumable), clean up. The CLI only builds stage lists.

    run_job(stages, JobInputs(model=..., calib=[...]), out=OUT)

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

from . import distributed
from .checkpoint import Checkpoint
from .data import make_windows
from .io import MASKS_FILE, file_digest, load_masks, tensor_digest
from .output import check_dir, clean_stale
from .model.adapters import get_adapter
from .model.loading import load_model
from .pipeline import check_finite_weights, resolve_device
from .report import RunReport
from .runner import RunContext, run_stages
from .perplexity import EvaluateStage
from .save import SaveStage
from .stages import Stage

Log = Callable[[str], None]


@dataclass
class JobInputs:
    """Where the model and texts come from, and how to run."""

    model: str | Path  # the model to change: a dense model (prune) or a pruned folder (recover, certify)
    calib: Sequence[str | Path] = ()
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

    def paths(self) -> tuple:
        """Everything the job reads from disk (an output may never be, lie in, or hold one of these)."""
        return tuple(p for p in (self.model, self.dense, *self.calib, *self.eval_texts)
                     if p is not None and not isinstance(p, torch.Tensor))


def _describe_path(p: str | Path) -> dict:
    path = Path(p).expanduser()
    if path.is_file():
        return {"path": str(path.resolve()), "sha256": file_digest(path), "bytes": path.stat().st_size}
    if path.is_dir():
        return {"path": str(path.resolve())}
    return {"name": str(p)}  # a hub id or dataset name


def _fingerprint(stages: Sequence[Stage], model_digest: str, windows: torch.Tensor | None, device: torch.device,
                 extra: dict) -> str:
    from ._version import __version__  # noqa: PLC0415

    payload = {"stages": [s.spec() for s in stages if not isinstance(s, SaveStage)], "model": model_digest,
               "windows": tensor_digest([("w", windows)]) if windows is not None else None,
               "device": device.type, "maskopt": __version__, **extra}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def run_job(stages: list[Stage], inputs: JobInputs, *, out: str | Path | None = None, resume: bool = True,
            report: RunReport | None = None, log: Log = print) -> RunReport:
    """Run ``stages`` on the model of ``inputs``; a SaveStage writes ``out``. Returns the report."""
    if distributed.init_from_env() and not distributed.is_main():  # torchrun: rank 0 writes and reports
        stages = [s for s in stages if not isinstance(s, (SaveStage, EvaluateStage))]
        log, inputs = (lambda _m: None), dataclasses.replace(inputs, progress=False)
    saves = [s for s in stages if isinstance(s, SaveStage)]
    if saves:
        out = check_dir(out, saves[-1].options.overwrite, inputs.paths())
        stale = clean_stale(out)
        if stale:
            print(f"removed {len(stale)} temporary folder(s) left by an interrupted earlier run: "
                + ", ".join(p.name for p in stale), file=sys.stderr)
    device = distributed.local_device(resolve_device(inputs.device))
    model_path = Path(inputs.model)
    model, tokenizer = load_model(inputs.model, trust_remote_code=inputs.trust_remote_code, progress=inputs.progress)
    adapter = get_adapter(model)
    check_finite_weights(model, adapter)
    model_digest = tensor_digest(model.state_dict().items())
    windows = None
    if any(s.needs_windows for s in stages):
        windows = make_windows(list(inputs.calib), tokenizer, model, inputs.nsamples, inputs.seqlen, inputs.seed)
    dense = None
    if any(s.needs_dense for s in stages):
        if inputs.dense is not None:
            dense = load_model(inputs.dense, trust_remote_code=inputs.trust_remote_code, progress=inputs.progress)[0]
            if get_adapter(dense) is not adapter:
                raise ValueError(f"the dense model {inputs.dense} is not of the same family as {inputs.model}")
        else:
            dense = copy.deepcopy(model)  # the model is still dense here: keep it as the reference
    masks = load_masks(model_path / MASKS_FILE) if (model_path / MASKS_FILE).is_file() else {}
    report = report or RunReport(config={}, model=str(inputs.model))
    previous = report.inputs
    report.inputs = {
        "model": _describe_path(inputs.model), "dense": _describe_path(inputs.dense) if inputs.dense else None,
        "calibration": [_describe_path(c) for c in inputs.calib] if windows is not None else [],
        "nsamples": int(windows.shape[0]) if windows is not None else None,
        "seqlen": int(windows.shape[1]) if windows is not None else None, "seed": inputs.seed,
        "eval_texts": [_describe_path(t) for t in inputs.eval_texts], "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(), "stages": [s.spec() for s in stages], "command": sys.argv,
    }
    if previous:
        report.inputs["previous_run"] = previous
    ctx = RunContext(model, tokenizer, adapter, device, report, windows=windows, dense=dense, masks=masks,
                     batch_size=inputs.batch_size, offload=inputs.offload, progress=inputs.progress, log=log,
                     out=Path(out) if out is not None else None, input_paths=inputs.paths())
    checkpoint = None
    if saves:
        dense_digest = tensor_digest(dense.state_dict().items()) if inputs.dense is not None else None
        checkpoint = Checkpoint(out, _fingerprint(stages, model_digest, windows, device, {"dense": dense_digest}))
        if not resume:
            checkpoint.clear()
    result = run_stages(stages, ctx, checkpoint)
    distributed.barrier()
    if checkpoint is not None:
        checkpoint.clear()
    return result
