"""``maskopt train sfw | imp | soup``: training-time sparsity from the command line. No logic of its own."""
from __future__ import annotations

import functools
import inspect
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Sparsity through training: compression-aware SFW, IMP with retraining schedules (and BIMP), "
                       "Sparse Model Soups. Workloads: the digits classifier (scikit-learn) or a causal LM.")

_W = dict(
    workload=typer.Option("digits", "--workload", "-w", help="digits (scikit-learn 8×8 digits, MLP/CNN) or lm."),
    model=typer.Option(None, help="lm: model folder (default: the tiny Llama in ../shared)."),
    train_text=typer.Option(None, help="lm: training text (default: ../shared english-calib); its last 10% is validation."),
    eval_text=typer.Option(None, help="lm: test text for perplexity (default: ../shared english-heldout)."),
    seqlen=typer.Option(None, help="lm: tokens per training window (default 256)."),
    batch_size=typer.Option(None, help="Examples (digits) or windows (lm) per step."),
    eval_windows=typer.Option(None, help="lm: test windows of 512 tokens (default 64)."),
    arch=typer.Option(None, help="digits: mlp (64-300-100-10) or cnn."),
    lr=typer.Option(None, help="Peak lr of the original (dense) schedule that the retraining schedules refer to."),
    sparsities=typer.Option("0.5,0.7,0.9", help="Target sparsity of each phase, strictly increasing."),
    schedule=typer.Option("LLR", help="Retraining lr schedule: FT | LRW | SLR | CLR | LLR | ALLR."),
    pruner=typer.Option("magnitude", help="magnitude or a registered method (see `maskopt methods`)."),
    scope=typer.Option("global", help="magnitude: global or layer."),
    pattern=typer.Option("unstructured", help="registered methods: unstructured | per_row | N:M."),
    init=typer.Option(None, help="Start from this model.pt / output folder (instead of a fresh, pretrained or dense-trained model)."),
    seed=typer.Option(0, help="Seed of the initialization and the batch order(s)."),
    out=typer.Option(None, "--out", "-o", help="Output folder: results.json, last_good/, model/."),
    overwrite=typer.Option(False, help="Replace --out if it exists."),
)


def _fail(e: Exception) -> None:
    typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _floats(text: str, what: str) -> list[float]:
    try:
        return [float(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise ValueError(f"{what} must be comma-separated numbers, e.g. 0.5,0.7,0.9; got {text!r}") from None


_TYPES = dict(workload=str, model=Optional[str], train_text=Optional[str], eval_text=Optional[str], seqlen=Optional[int],
              batch_size=Optional[int], eval_windows=Optional[int], arch=Optional[str], lr=Optional[float],
              sparsities=str, schedule=str, pruner=str, scope=str, pattern=str, init=Optional[Path], seed=int,
              out=Optional[Path], overwrite=bool)
_HEAD = ("workload", "model", "train_text", "eval_text", "seqlen", "batch_size", "eval_windows", "arch")
_TAIL = ("pruner", "scope", "pattern", "init", "seed", "out", "overwrite")


def _shared(*middle: str):
    """The options every train command shares (workload, pruner, output …, and ``middle``), around the command's
    own; the command receives them as ``s`` (a namespace) and its own options as keyword arguments."""
    names = (*_HEAD, *middle)

    def deco(fn):
        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
               for p in inspect.signature(fn, eval_str=True).parameters.values() if p.name != "s"]
        shared = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=_W[n], annotation=_TYPES[n])
                  for n in names]
        tail = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=_W[n], annotation=_TYPES[n]) for n in _TAIL]

        @functools.wraps(fn)
        def command(**kw):
            s = SimpleNamespace(**{n: kw.pop(n) for n in (*names, *_TAIL)})
            try:
                return fn(s, **kw)
            except _ERRORS as e:
                _fail(e)

        params = [*shared, *own, *tail]
        command.__signature__ = inspect.Signature(params)
        command.__annotations__ = {p.name: p.annotation for p in params}
        del command.__wrapped__  # typer must read the signature above, not the function's own
        return command

    return deco


def _workload(s: SimpleNamespace, threads: int, **extra):
    """The workload of the shared options (torch threads set first)."""
    import torch  # noqa: PLC0415

    from .jobs import make_workload  # noqa: PLC0415

    torch.set_num_threads(max(1, threads))
    return make_workload(s.workload, model_path=s.model, train_text=s.train_text, eval_text=s.eval_text,
                         seqlen=s.seqlen, batch_size=s.batch_size, eval_windows=s.eval_windows, arch=s.arch, **extra)


def _pruner(s: SimpleNamespace):
    from .pruners import Pruner  # noqa: PLC0415

    return Pruner(s.pruner, scope=s.scope, pattern=s.pattern)


_ERRORS = (ValueError, OSError, FloatingPointError, RuntimeError, ImportError)


@app.command()
@_shared()
def sfw(
    s: SimpleNamespace,
    constraint: str = typer.Option("ksupport", help="Region per weight matrix: ksupport | ksparse | l1 | l2."),
    k: float = typer.Option(0.3, help="k of the k-sets: a fraction of each matrix's entries (≤ 1) or a count."),
    width: float = typer.Option(10.0, help="ℓ₂ diameter of each region = 2 · width · ‖initial weights‖₂."),
    lr: float = typer.Option(0.1, help="SFW step size (before rescaling)."),
    momentum: float = typer.Option(0.9, help="Momentum μ in d ← μ d + (1 − μ) ∇."),
    rescale: str = typer.Option("gradient", help="Step-size rescaling: gradient | diameter | none."),
    schedule: str = typer.Option("linear", help="Decay of the SFW step size: linear | constant | step | cosine."),
    budget: str = typer.Option("30ep", help="Training budget: '30ep' (epochs) or '500' (steps)."),
    prune_at: str = typer.Option("0.5,0.7,0.9", help="Sparsities of the one-shot pruning after training."),
    threads: int = typer.Option(1, help="torch threads."),
) -> None:
    """Train with Stochastic Frank-Wolfe over k-support-norm balls (or other regions), then prune one-shot."""
    from .dense import SFWConfig  # noqa: PLC0415
    from .jobs import sfw_job  # noqa: PLC0415

    wl = _workload(s, threads)
    cfg = SFWConfig(constraint, k, width, lr, momentum, rescale, schedule)
    sfw_job(wl, cfg, budget, _floats(prune_at, "--prune-at"), _pruner(s), seed=s.seed, init=s.init, out=s.out,
            overwrite=s.overwrite, log=typer.echo)


@app.command()
@_shared("lr", "sparsities", "schedule")
def imp(
    s: SimpleNamespace,
    retrain: str = typer.Option("2ep", help="Retraining budget per phase: '2ep' or '100' (steps)."),
    dense_budget: str = typer.Option("auto", help="Dense training first: auto (digits: 30 epochs; lm: pretrained), 0, or a budget."),
    bimp_total: Optional[str] = typer.Option(None, help="BIMP: one total budget for dense training from scratch + all retraining."),
    threads: int = typer.Option(1, help="torch threads."),
) -> None:
    """Iterative magnitude pruning with a retraining schedule (or budgeted IMP with --bimp-total)."""
    from .imp import IMPConfig  # noqa: PLC0415
    from .jobs import imp_job  # noqa: PLC0415

    wl = _workload(s, threads, lr=s.lr)
    cfg = IMPConfig(_floats(s.sparsities, "--sparsities"), retrain, s.schedule, _pruner(s), seed=s.seed)
    imp_job(wl, cfg, dense_budget=dense_budget, bimp_total=bimp_total, init=s.init, out=s.out, overwrite=s.overwrite,
            log=typer.echo)


@app.command()
@_shared("lr", "sparsities", "schedule")
def soup(
    s: SimpleNamespace,
    retrain: str = typer.Option("2ep", help="Retraining budget per copy and phase."),
    copies: int = typer.Option(3, "--copies", "-m", help="Copies retrained per phase (different seeds)."),
    soup_kind: str = typer.Option("uniform", "--soup", help="Soup that starts the next phase: uniform | greedy."),
    weight_decays: Optional[str] = typer.Option(None, help="One weight decay per copy, comma-separated (default: the optimizer's)."),
    workers: int = typer.Option(2, help="Parallel processes for the copies (0: one after the other in this process)."),
    dense_budget: str = typer.Option("auto", help="Dense training first: auto, 0, or a budget."),
    threads: int = typer.Option(1, help="torch threads per process."),
) -> None:
    """Sparse Model Soups: each prune-retrain phase retrains m copies in parallel and averages them."""
    from .jobs import soup_job  # noqa: PLC0415
    from .sms import SMSConfig  # noqa: PLC0415

    wl = _workload(s, threads, lr=s.lr)
    wds = _floats(weight_decays, "--weight-decays") if weight_decays else None
    cfg = SMSConfig(_floats(s.sparsities, "--sparsities"), retrain, copies, soup_kind, s.schedule, _pruner(s),
                    weight_decays=wds, seed=s.seed, workers=workers, threads=threads)
    soup_job(wl, cfg, dense_budget=dense_budget, init=s.init, out=s.out, overwrite=s.overwrite, log=typer.echo)
