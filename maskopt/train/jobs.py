"""End-to-end training jobs behind ``maskopt train``: workload → model → run → results + checkpoints.

Output folder layout: ``results.json`` (the run's rows and settings), ``last_good/`` (the state after
the last finished phase; kept when a later phase fails), ``model/`` (the final model: a Hugging
Face folder for LMs, ``model.pt`` otherwise). The run writes into a temporary sibling of ``--out``
(maskopt.output) that is renamed onto it when the run ends, or when training fails (non-finite loss,
Ctrl-C) after a good state was kept; any other failure leaves ``--out`` as it was.
"""
from __future__ import annotations

import pickle
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from ..io import write_json
from ..run.output import atomic_dir, check_dir, clean_stale, output_id, publish_dir, start_dir
from .budget import Budget
from .checkpoint import LastGood
from .dense import SFWConfig, oneshot_curve, train_dense, train_sfw
from .errors import NonFiniteLossError
from .imp import IMPConfig, run_bimp, run_imp
from .masking import current_masks, sparsity_of
from .pruners import Pruner
from .schedules import TrainSchedule
from .sms import SMSConfig, run_sms
from .workloads import DigitsWorkload, LMWorkload, Workload

WORKLOADS = ("digits", "lm")
Log = Callable[[str], None]


def make_workload(kind: str, **options: Any) -> Workload:
    """'digits' (options: arch, hidden, batch_size, epochs, lr) or 'lm' (model_path, train_text, eval_text, …)."""
    options = {k: v for k, v in options.items() if v is not None}
    if kind == "digits":
        return DigitsWorkload(**options)
    if kind == "lm":
        from .. import defaults  # noqa: PLC0415

        options.setdefault("model_path", str(defaults.default_model()))
        options.setdefault("train_text", str(defaults.default_calib()))
        options.setdefault("eval_text", str(defaults.default_eval_texts()[0]))
        for key in ("model_path", "train_text", "eval_text"):
            if not Path(options[key]).exists():
                raise FileNotFoundError(f"{key.replace('_', ' ')} {options[key]} does not exist")
        return LMWorkload(**options)
    raise ValueError(f"unknown workload {kind!r}; choose one of {', '.join(WORKLOADS)}")


def check_out(out: str | Path | None, overwrite: bool, inputs: tuple = ()) -> Path | None:
    """The checked output folder (before any work), with the temporaries of killed earlier runs removed."""
    if out is None:
        return None
    out = check_dir(out, overwrite, inputs)
    clean_stale(out)
    return out


@contextmanager
def work_folder(out: Path | None, overwrite: bool, inputs: tuple = ()) -> Iterator[Path | None]:
    """A temporary sibling of ``out`` that the run writes into; renamed onto ``out`` at the end, or after a
    training failure that left a last good state; removed after any other failure."""
    if out is None:
        yield None
        return
    work = start_dir(out)
    try:
        yield work
    except (NonFiniteLossError, KeyboardInterrupt):
        if (work / "last_good").is_dir():
            check_dir(out, overwrite, inputs)
            publish_dir(work, out)
        else:
            shutil.rmtree(work, ignore_errors=True)
        raise
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    check_dir(out, overwrite, inputs)
    publish_dir(work, out)


def init_file(init: str | Path) -> Path:
    """The ``model.pt`` of ``init``: that file, or one in a folder (``last_good/``, top level, ``model/``)."""
    p = Path(init).expanduser()
    for cand in (p, p / "last_good" / "model.pt", p / "model.pt", p / "model" / "model.pt"):
        if cand.is_file():
            return cand
    raise FileNotFoundError(f"no model.pt found at {init}")


def load_init(model: nn.Module, init: str | Path) -> None:
    """Load a state dict (tensors only: a pickle that holds code is refused, never run)."""
    f = init_file(init)
    try:
        state = torch.load(f, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as e:
        raise ValueError(f"--init {f} is not a state dict of tensors that maskopt can read safely "
                         f"({type(e).__name__}); maskopt never unpickles code") from None
    if not isinstance(state, dict):
        raise ValueError(f"--init {f} holds a {type(state).__name__}, not a state dict")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"--init {f} does not fit this model: {first}") from None


def starting_model(workload: Workload, *, dense_budget: str | None = "auto", init: str | Path | None = None,
                   seed: int = 0, guard: LastGood | None = None, log: Log = print) -> tuple[nn.Module, TrainSchedule,
                                                                                          dict]:
    """The model IMP/SMS start from, the original schedule they refer to, and what was done.

    ``dense_budget``: 'auto' (digits: train with the default schedule; LM: the pretrained model as is),
    '0'/None (no dense training), or a budget (the default schedule stretched to it).
    """
    model = workload.build_model(seed)
    original = workload.default_schedule()
    info: dict[str, Any] = {}
    if init is not None:
        load_init(model, init)
        info["init"] = str(init)
    elif dense_budget not in (None, "0", 0):
        if dense_budget == "auto":
            if not isinstance(workload, DigitsWorkload):
                return model, original, {"dense": "pretrained"}
        else:
            original = original.scaled(Budget.parse(dense_budget).steps(workload.steps_per_epoch()))
        res = train_dense(model, workload, original, seed=seed, guard=guard)
        info["dense"] = {k: v for k, v in res.items() if k != "loss_curve"} | {"steps": original.steps}
        log(f"dense training: {original.steps} steps in {res['seconds']:.1f} s")
    info[f"dense_{workload.metric}"] = workload.evaluate(model, "test")
    log(f"dense {workload.metric}: {info[f'dense_{workload.metric}']:.3f}")
    return model, original, info


def save_final(workload: Workload, model: nn.Module, out: Path | None) -> None:
    if out is None:
        return
    with atomic_dir(out / "model", overwrite=True) as tmp:
        if isinstance(workload, LMWorkload):
            model.save_pretrained(tmp, safe_serialization=True)
            workload._tok().save_pretrained(tmp)
        else:
            torch.save(model.state_dict(), tmp / "model.pt")


def _finish(kind: str, workload: Workload, model: nn.Module, out: Path | None, payload: dict, t0: float) -> dict:
    payload = {"command": kind, "workload": workload.describe(), **payload,
               "final_sparsity": sparsity_of(current_masks(workload.prunable(model))), "seconds": time.time() - t0}
    save_final(workload, model, out)
    if out is not None:
        write_json(out / "results.json", {**payload, "output_id": output_id(out)})
    return payload


def _inputs(workload: Workload, init: str | Path | None) -> tuple:
    """The files a training run reads (its output may never be, lie in, or hold one of them)."""
    paths = [getattr(workload, k, None) for k in ("model_path", "train_text", "eval_text")]
    return tuple(str(p) for p in (*paths, init) if p is not None)


def sfw_job(workload: Workload, config: SFWConfig, budget: str, prune_at: list[float], pruner: Pruner, *,
            seed: int = 0, init: str | None = None, out: str | Path | None = None, overwrite: bool = False,
            log: Log = print) -> dict:
    """Train the dense model with SFW, then prune it one-shot at every sparsity (no retraining)."""
    t0 = time.time()
    inputs = _inputs(workload, init)
    out = check_out(out, overwrite, inputs)
    Budget.parse(budget).steps(workload.steps_per_epoch())  # a bad budget fails before any work
    model = workload.build_model(seed)
    if init is not None:
        load_init(model, init)
    with work_folder(out, overwrite, inputs) as work:
        return _sfw(workload, model, config, budget, prune_at, pruner, seed, work, t0, log)


def _sfw(workload, model, config, budget, prune_at, pruner, seed, out, t0, log) -> dict:
    guard = LastGood(out)
    res = train_sfw(model, workload, config, budget, seed=seed, guard=guard)
    dense_metric = workload.evaluate(model, "test")
    log(f"SFW ({config.kind}, k={config.k}): {res['steps']} steps in {res['seconds']:.1f} s; dense "
        f"{workload.metric} {dense_metric:.3f}")
    curve = oneshot_curve(model, workload, prune_at, pruner)
    for r in curve:
        log(f"  pruned one-shot to {r['sparsity']:.2f}: {workload.metric} {r[workload.metric]:.3f}")
    return _finish("sfw", workload, model, out, {"config": config.to_dict(), "budget": str(budget), "seed": seed,
                                                  f"dense_{workload.metric}": dense_metric, "oneshot": curve,
                                                  "train": {k: v for k, v in res.items() if k != "regions"}}, t0)


def imp_job(workload: Workload, config: IMPConfig, *, dense_budget: str | None = "auto", bimp_total: str | None = None,
            init: str | None = None, out: str | Path | None = None, overwrite: bool = False, log: Log = print) -> dict:
    """IMP (or BIMP with ``bimp_total``) with the configured retraining schedule."""
    return _in_work_folder(workload, init, out, overwrite, _imp, config, dense_budget, bimp_total, init, log=log)


def _in_work_folder(workload: Workload, init, out, overwrite: bool, job: Callable, *args, log: Log) -> dict:
    """Check ``out`` and ``init`` before any work, then ``job(workload, *args, work_folder, t0, log)``."""
    t0 = time.time()
    inputs = _inputs(workload, init)
    out = check_out(out, overwrite, inputs)
    if init is not None:
        init_file(init)
    with work_folder(out, overwrite, inputs) as work:
        return job(workload, *args, work, t0, log)


def _imp(workload, config, dense_budget, bimp_total, init, out, t0, log) -> dict:
    guard = LastGood(out)
    if bimp_total is not None:
        model, res = run_bimp(workload, config, bimp_total, guard=guard, log=log)
        return _finish("bimp", workload, model, out, res, t0)
    model, original, info = starting_model(workload, dense_budget=dense_budget, init=init, seed=config.seed,
                                           guard=guard, log=log)
    res = run_imp(model, workload, config, original, guard=guard, log=log)
    return _finish("imp", workload, model, out, info | res, t0)


def soup_job(workload: Workload, config: SMSConfig, *, dense_budget: str | None = "auto", init: str | None = None,
             out: str | Path | None = None, overwrite: bool = False, log: Log = print) -> dict:
    """Sparse Model Soups: IMP phases with m retrained copies averaged."""
    return _in_work_folder(workload, init, out, overwrite, _soup, config, dense_budget, init, log=log)


def _soup(workload, config, dense_budget, init, out, t0, log) -> dict:
    guard = LastGood(out)
    model, original, info = starting_model(workload, dense_budget=dense_budget, init=init, seed=config.seed,
                                           guard=guard, log=log)
    res = run_sms(model, workload, config, original, guard=guard, log=log)
    return _finish("soup", workload, model, out, info | res, t0)
