"""``maskopt train sfw | imp | soup``: training-time sparsity from the command line. No logic of its own."""
from __future__ import annotations

from pathlib import Path
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


def _setup(threads: int, workload: str, **kw):
    import torch  # noqa: PLC0415

    from .jobs import make_workload  # noqa: PLC0415

    torch.set_num_threads(max(1, threads))
    names = {"model": "model_path"}
    return make_workload(workload, **{names.get(k, k): v for k, v in kw.items()})


def _pruner(pruner: str, scope: str, pattern: str):
    from .pruners import Pruner  # noqa: PLC0415

    return Pruner(pruner, scope=scope, pattern=pattern)


_ERRORS = (ValueError, OSError, FloatingPointError, RuntimeError, ImportError)


@app.command()
def sfw(
    workload: str = _W["workload"], model: Optional[str] = _W["model"], train_text: Optional[str] = _W["train_text"],
    eval_text: Optional[str] = _W["eval_text"], seqlen: Optional[int] = _W["seqlen"],
    batch_size: Optional[int] = _W["batch_size"], eval_windows: Optional[int] = _W["eval_windows"],
    arch: Optional[str] = _W["arch"],
    constraint: str = typer.Option("ksupport", help="Region per weight matrix: ksupport | ksparse | l1 | l2."),
    k: float = typer.Option(0.3, help="k of the k-sets: a fraction of each matrix's entries (≤ 1) or a count."),
    width: float = typer.Option(10.0, help="ℓ₂ diameter of each region = 2 · width · ‖initial weights‖₂."),
    lr: float = typer.Option(0.1, help="SFW step size (before rescaling)."),
    momentum: float = typer.Option(0.9, help="Momentum μ in d ← μ d + (1 − μ) ∇."),
    rescale: str = typer.Option("gradient", help="Step-size rescaling: gradient | diameter | none."),
    schedule: str = typer.Option("linear", help="Decay of the SFW step size: linear | constant | step | cosine."),
    budget: str = typer.Option("30ep", help="Training budget: '30ep' (epochs) or '500' (steps)."),
    prune_at: str = typer.Option("0.5,0.7,0.9", help="Sparsities of the one-shot pruning after training."),
    pruner: str = _W["pruner"],
    scope: str = _W["scope"],
    pattern: str = _W["pattern"],
    init: Optional[Path] = _W["init"],
    seed: int = _W["seed"],
    threads: int = typer.Option(1, help="torch threads."),
    out: Optional[Path] = _W["out"],
    overwrite: bool = _W["overwrite"],
) -> None:
    """Train with Stochastic Frank-Wolfe over k-support-norm balls (or other regions), then prune one-shot."""
    from .dense import SFWConfig  # noqa: PLC0415
    from .jobs import sfw_job  # noqa: PLC0415

    try:
        wl = _setup(threads, workload, model=model, train_text=train_text, eval_text=eval_text, seqlen=seqlen,
                    batch_size=batch_size, eval_windows=eval_windows, arch=arch)
        cfg = SFWConfig(constraint, k, width, lr, momentum, rescale, schedule)
        sfw_job(wl, cfg, budget, _floats(prune_at, "--prune-at"), _pruner(pruner, scope, pattern), seed=seed,
                init=init, out=out, overwrite=overwrite, log=typer.echo)
    except _ERRORS as e:
        _fail(e)


@app.command()
def imp(
    workload: str = _W["workload"], model: Optional[str] = _W["model"], train_text: Optional[str] = _W["train_text"],
    eval_text: Optional[str] = _W["eval_text"], seqlen: Optional[int] = _W["seqlen"],
    batch_size: Optional[int] = _W["batch_size"], eval_windows: Optional[int] = _W["eval_windows"],
    arch: Optional[str] = _W["arch"], lr: Optional[float] = _W["lr"],
    sparsities: str = _W["sparsities"],
    retrain: str = typer.Option("2ep", help="Retraining budget per phase: '2ep' or '100' (steps)."),
    schedule: str = _W["schedule"],
    pruner: str = _W["pruner"],
    scope: str = _W["scope"],
    pattern: str = _W["pattern"],
    dense_budget: str = typer.Option("auto", help="Dense training first: auto (digits: 30 epochs; lm: pretrained), 0, or a budget."),
    bimp_total: Optional[str] = typer.Option(None, help="BIMP: one total budget for dense training from scratch + all retraining."),
    init: Optional[Path] = _W["init"],
    seed: int = _W["seed"],
    threads: int = typer.Option(1, help="torch threads."),
    out: Optional[Path] = _W["out"],
    overwrite: bool = _W["overwrite"],
) -> None:
    """Iterative magnitude pruning with a retraining schedule (or budgeted IMP with --bimp-total)."""
    from .imp import IMPConfig  # noqa: PLC0415
    from .jobs import imp_job  # noqa: PLC0415

    try:
        wl = _setup(threads, workload, model=model, train_text=train_text, eval_text=eval_text, seqlen=seqlen,
                    batch_size=batch_size, eval_windows=eval_windows, arch=arch, lr=lr)
        cfg = IMPConfig(_floats(sparsities, "--sparsities"), retrain, schedule, _pruner(pruner, scope, pattern),
                        seed=seed)
        imp_job(wl, cfg, dense_budget=dense_budget, bimp_total=bimp_total, init=init, out=out, overwrite=overwrite,
                log=typer.echo)
    except _ERRORS as e:
        _fail(e)


@app.command()
def soup(
    workload: str = _W["workload"], model: Optional[str] = _W["model"], train_text: Optional[str] = _W["train_text"],
    eval_text: Optional[str] = _W["eval_text"], seqlen: Optional[int] = _W["seqlen"],
    batch_size: Optional[int] = _W["batch_size"], eval_windows: Optional[int] = _W["eval_windows"],
    arch: Optional[str] = _W["arch"], lr: Optional[float] = _W["lr"],
    sparsities: str = _W["sparsities"],
    retrain: str = typer.Option("2ep", help="Retraining budget per copy and phase."),
    copies: int = typer.Option(3, "--copies", "-m", help="Copies retrained per phase (different seeds)."),
    soup_kind: str = typer.Option("uniform", "--soup", help="Soup that starts the next phase: uniform | greedy."),
    weight_decays: Optional[str] = typer.Option(None, help="One weight decay per copy, comma-separated (default: the optimizer's)."),
    schedule: str = _W["schedule"],
    pruner: str = _W["pruner"],
    scope: str = _W["scope"],
    pattern: str = _W["pattern"],
    workers: int = typer.Option(2, help="Parallel processes for the copies (0: one after the other in this process)."),
    dense_budget: str = typer.Option("auto", help="Dense training first: auto, 0, or a budget."),
    init: Optional[Path] = _W["init"],
    seed: int = _W["seed"],
    threads: int = typer.Option(1, help="torch threads per process."),
    out: Optional[Path] = _W["out"],
    overwrite: bool = _W["overwrite"],
) -> None:
    """Sparse Model Soups: each prune-retrain phase retrains m copies in parallel and averages them."""
    from .jobs import soup_job  # noqa: PLC0415
    from .sms import SMSConfig  # noqa: PLC0415

    try:
        wl = _setup(threads, workload, model=model, train_text=train_text, eval_text=eval_text, seqlen=seqlen,
                    batch_size=batch_size, eval_windows=eval_windows, arch=arch, lr=lr)
        wds = _floats(weight_decays, "--weight-decays") if weight_decays else None
        cfg = SMSConfig(_floats(sparsities, "--sparsities"), retrain, copies, soup_kind, schedule,
                        _pruner(pruner, scope, pattern), weight_decays=wds, seed=seed, workers=workers, threads=threads)
        soup_job(wl, cfg, dense_budget=dense_budget, init=init, out=out, overwrite=overwrite, log=typer.echo)
    except _ERRORS as e:
        _fail(e)
