"""Command line: maskopt prune | eval | methods (| certify | recover). No logic of its own."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="maskopt — prune LLMs after training by optimization (SparseFW, SparseSwaps, exact B&B).")


def _fail(e: Exception) -> None:
    typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _parse_opts(opts: list[str]) -> dict[str, str]:
    out = {}
    for o in opts or []:
        if "=" not in o:
            raise ValueError(f"--opt takes KEY=VALUE, got {o!r}")
        k, v = o.split("=", 1)
        out[k.strip()] = v.strip()
    return out


@app.command()
def prune(
    model: Optional[str] = typer.Argument(None, help="HF model folder, .gguf file/folder, or hub id. Default: the tiny Llama in ../shared."),
    method: str = typer.Option("wanda", "--method", "-m", help="Mask method: see `maskopt methods`."),
    sparsity: float = typer.Option(0.5, "--sparsity", "-s", help="Fraction of prunable weights set to zero, in [0, 1). Ignored for N:M."),
    pattern: str = typer.Option("per_row", "--pattern", "-p", help="'per_row' (equal count per output row), 'unstructured' (per matrix), N:M such as 2:4 / 4:8 (keep N of every M inputs), or cs256 / cs256:G (per row, a multiple of G=8 per 256-input tile: fits `maskopt export --format cs256`)."),
    calib: Optional[List[str]] = typer.Option(None, "--calib", help="Calibration text file(s), folder of .txt, or a `datasets` name. Default: ../shared/data/english-calib/calib.txt."),
    nsamples: int = typer.Option(128, help="Number of calibration windows."),
    seqlen: Optional[int] = typer.Option(None, help="Tokens per calibration window (default min(2048, model context))."),
    seed: int = typer.Option(0, help="Seed of the calibration window sampling."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (HF checkpoint + maskopt_report.json/.md). Written atomically."),
    overwrite: bool = typer.Option(False, help="Replace --out if it exists."),
    eval_text: Optional[List[str]] = typer.Option(None, "--eval-text", help="Text file(s) for perplexity before and after. Default with the default model: english-heldout and WikiText-2."),
    no_eval: bool = typer.Option(False, "--no-eval", help="Skip perplexity evaluation."),
    eval_max_windows: Optional[int] = typer.Option(None, help="Cap on evaluation windows per text (0 = whole text; the default-model job uses 128)."),
    opt: Optional[List[str]] = typer.Option(None, "--opt", help="Method option KEY=VALUE (repeatable), e.g. --opt iterations=500."),
    certify: bool = typer.Option(False, help="Add a certified lower bound (root relaxation) and optimality gap per layer to the report."),
    reconstruct: Optional[str] = typer.Option(None, help="Recovery: reconstruct units towards the dense model: matrix | subblock | block | blocks."),
    recon_opt: Optional[List[str]] = typer.Option(None, "--recon-opt", help="Reconstruction option KEY=VALUE (lr, epochs, batch_size, n_blocks, dense_inputs, …)."),
    perp: Optional[str] = typer.Option(None, help="Recovery: PERP retraining: norms_biases | masklora | scalelora."),
    perp_opt: Optional[List[str]] = typer.Option(None, "--perp-opt", help="PERP option KEY=VALUE (lr, steps, epochs, r, alpha, …)."),
    batch_size: int = typer.Option(8, help="Calibration batch size."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1 … (default: cuda if available)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Prune a causal LM layer by layer (optionally recover) and save it with a report."""
    from . import defaults  # noqa: PLC0415
    from .config import PruneConfig  # noqa: PLC0415
    from .jobs import prune_job  # noqa: PLC0415

    try:
        is_default = model is None
        model_name = str(defaults.default_model()) if is_default else model
        calib_files = calib or [str(defaults.default_calib())]
        texts = [] if no_eval else (eval_text or ([str(p) for p in defaults.default_eval_texts()] if is_default else []))
        if is_default and not eval_text and eval_max_windows is None:
            eval_max_windows = 128  # keeps the default job quick; pass --eval-max-windows 0 for whole texts
        if eval_max_windows == 0:
            eval_max_windows = None
        cfg = PruneConfig(method=method, sparsity=sparsity, pattern=pattern, method_options=_parse_opts(opt),
                          nsamples=nsamples, seqlen=seqlen, seed=seed, batch_size=batch_size, device=device,
                          certify=certify, progress=not quiet)
        rcfg, pcfg = _recovery_configs(reconstruct, recon_opt, perp, perp_opt)
        report = prune_job(model_name, out, cfg, calib=calib_files, eval_texts=texts,
                           eval_max_windows=eval_max_windows, overwrite=overwrite, reconstruct=rcfg, perp=pcfg)
    except (ValueError, FileNotFoundError, FileExistsError, FloatingPointError, RuntimeError) as e:
        _fail(e)
    ref = report.mean_reference_relative_error()
    typer.echo(f"sparsity {report.sparsity:.4f}; mean relative layer error {report.mean_relative_error():.4f}"
               + (f" (Wanda {ref:.4f})" if ref is not None else "") + f"; {report.wall_seconds:.1f} s")
    if out is None:
        typer.echo("(no --out given: nothing written)")


@app.command("eval")
def eval_cmd(
    model: str = typer.Argument(..., help="Model folder (e.g. the output of `maskopt prune`), .gguf, or hub id."),
    text: Optional[List[str]] = typer.Option(None, "--text", help="Evaluation text file(s). Default: english-heldout and WikiText-2 in ../shared."),
    seqlen: Optional[int] = typer.Option(None, help="Window length (default min(2048, model context))."),
    max_windows: Optional[int] = typer.Option(None, help="Cap on windows per text."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda … (default: cuda if available)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    tasks: Optional[str] = typer.Option(None, "--tasks", help="Zero-shot lm-eval tasks instead of perplexity, comma-separated, e.g. boolq,rte,hellaswag,winogrande,arc_easy,arc_challenge,openbookqa."),
    task_data: Optional[List[str]] = typer.Option(None, "--task-data", help="NAME=FILE: a bundled lm-eval task reads its evaluation split from this local .jsonl/.json/.csv/.parquet (the hub is unreachable)."),
    task_dir: Optional[Path] = typer.Option(None, "--task-dir", help="Folder of lm-eval task YAMLs with local data files."),
    limit: Optional[int] = typer.Option(None, help="With --tasks: at most this many examples per task."),
) -> None:
    """Perplexity of a model on text files (non-overlapping windows), or zero-shot accuracy with --tasks."""
    from . import defaults  # noqa: PLC0415
    from .jobs import eval_job  # noqa: PLC0415

    if tasks:
        return _zero_shot_cmd(model, tasks, task_data, task_dir, limit, as_json)
    try:
        texts = text or [str(p) for p in defaults.default_eval_texts()]
        if Path(model, "maskopt_export.json").is_file():  # an export of `maskopt export` (cs256, …)
            from .export import load_any  # noqa: PLC0415
            from .jobs import evaluate_texts, resolve_device  # noqa: PLC0415

            lm, tok = load_any(model)
            res = evaluate_texts(lm, tok, texts, seqlen=seqlen, max_windows=max_windows,
                                 device=resolve_device(device), progress=not quiet)
        else:
            res = eval_job(model, texts, seqlen=seqlen, max_windows=max_windows, device=device, progress=not quiet)
    except (ValueError, FileNotFoundError, FloatingPointError) as e:
        _fail(e)
    if as_json:
        typer.echo(json.dumps(res, indent=2))
    else:
        for k, v in res.items():
            typer.echo(f"{k}: perplexity {v:.3f}")


def _recovery_configs(reconstruct, recon_opt, perp, perp_opt):
    from .solve.methods.registry import _coerce  # noqa: PLC0415
    from .recover import PERPConfig, ReconstructConfig  # noqa: PLC0415
    import dataclasses  # noqa: PLC0415

    def build(cls, first_field, value, opts):
        if value is None:
            if opts:
                raise ValueError(f"options {opts} given without choosing the recovery stage")
            return None
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kw = _parse_opts(opts)
        unknown = set(kw) - set(fields)
        if unknown:
            raise ValueError(f"unknown option(s) {sorted(unknown)}; options: {sorted(fields)}")
        return cls(**{first_field: value, **{k: _coerce(v, fields[k]) for k, v in kw.items()}})

    return (build(ReconstructConfig, "granularity", reconstruct, recon_opt),
            build(PERPConfig, "mode", perp, perp_opt))


@app.command()
def recover(
    pruned: Path = typer.Argument(..., help="Pruned model folder (its zeros are the mask; they stay zero)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (written atomically)."),
    dense: Optional[str] = typer.Option(None, help="Dense model for reconstruction targets (default: from the report)."),
    calib: Optional[List[str]] = typer.Option(None, "--calib", help="Calibration/training text(s) (default: ../shared english-calib)."),
    reconstruct: Optional[str] = typer.Option(None, help="matrix | subblock | block | blocks."),
    recon_opt: Optional[List[str]] = typer.Option(None, "--recon-opt", help="Reconstruction option KEY=VALUE."),
    perp: Optional[str] = typer.Option(None, help="norms_biases | masklora | scalelora."),
    perp_opt: Optional[List[str]] = typer.Option(None, "--perp-opt", help="PERP option KEY=VALUE."),
    nsamples: int = typer.Option(128, help="Calibration windows."),
    seqlen: Optional[int] = typer.Option(None, help="Tokens per window (default min(2048, context))."),
    seed: int = typer.Option(0, help="Seed of the window sampling."),
    eval_text: Optional[List[str]] = typer.Option(None, "--eval-text", help="Perplexity before and after on these texts."),
    eval_max_windows: Optional[int] = typer.Option(None, help="Cap on evaluation windows per text."),
    overwrite: bool = typer.Option(False, help="Replace --out if it exists."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda … (default: cuda if available)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Recover quality of an already pruned model: reconstruction and/or PERP retraining; the mask is kept."""
    from . import defaults  # noqa: PLC0415
    from .jobs import recover_job  # noqa: PLC0415

    try:
        rcfg, pcfg = _recovery_configs(reconstruct, recon_opt, perp, perp_opt)
        recover_job(pruned, out, dense=dense, calib=calib or [str(defaults.default_calib())], reconstruct=rcfg,
                    perp=pcfg, nsamples=nsamples, seqlen=seqlen, seed=seed, eval_texts=eval_text or [],
                    eval_max_windows=eval_max_windows, overwrite=overwrite, device=device, progress=not quiet)
    except (ValueError, FileNotFoundError, FileExistsError, FloatingPointError, RuntimeError) as e:
        _fail(e)


@app.command()
def certify(
    pruned: Path = typer.Argument(..., help="Pruned model folder (output of `maskopt prune`)."),
    dense: Optional[str] = typer.Option(None, help="The dense model it was pruned from (default: the one named in its report)."),
    calib: Optional[List[str]] = typer.Option(None, "--calib", help="Calibration text(s) (default: ../shared english-calib)."),
    pattern: Optional[str] = typer.Option(None, help="Pattern of the masks (default: from the report)."),
    sparsity: Optional[float] = typer.Option(None, help="Sparsity of the masks (default: from the report)."),
    nsamples: int = typer.Option(128, help="Calibration windows."),
    seqlen: Optional[int] = typer.Option(None, help="Tokens per window (default min(2048, context))."),
    seed: int = typer.Option(0, help="Seed of the window sampling (use the pruning run's)."),
    iterations: int = typer.Option(300, help="Iterations of the root relaxation per layer."),
    bnb_rows: int = typer.Option(0, help="Deepen the bound of the first N rows of every layer by branch-and-bound."),
    bnb_time_limit: float = typer.Option(1.0, help="Seconds of branch-and-bound per selected row."),
    shift: str = typer.Option("rowwise", help="Root bound: 'rowwise' (per-row diagonal shift, tighter, slower) or 'jacobi' (fast)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the certificates as JSON here."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda … (default: cuda if available)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Certified lower bound on the best possible error of every layer, and the gap (err − LB) / err of its mask."""
    from . import defaults  # noqa: PLC0415
    from .io import write_json  # noqa: PLC0415
    from .jobs import certify_job  # noqa: PLC0415

    try:
        rows = certify_job(pruned, dense=dense, calib=calib or [str(defaults.default_calib())], pattern=pattern,
                           sparsity=sparsity, nsamples=nsamples, seqlen=seqlen, seed=seed, iterations=iterations,
                           bnb_rows=bnb_rows, bnb_time_limit=bnb_time_limit, shift=shift, device=device,
                           progress=not quiet)
    except (ValueError, FileNotFoundError, FloatingPointError, RuntimeError) as e:
        _fail(e)
    typer.echo(f"{'layer':40s} {'rel.err':>9s} {'error':>12s} {'lower bnd':>12s} {'gap':>7s}")
    for r in rows:
        typer.echo(f"{r['name']:40s} {r['relative_error']:9.4f} {r['error']:12.5g} {r['lower_bound']:12.5g} {r['gap']:7.1%}")
    tot_e, tot_lb = sum(r["error"] for r in rows), sum(r["lower_bound"] for r in rows)
    typer.echo(f"total: error {tot_e:.5g}, certified lower bound {tot_lb:.5g}, gap {(tot_e - tot_lb) / max(tot_e, 1e-300):.1%}")
    if out is not None:
        write_json(out, rows)


@app.command()
def methods() -> None:
    """List the registered mask methods and their options (set with --opt KEY=VALUE)."""
    from .solve.methods import available, method_options  # noqa: PLC0415

    for name in available():
        opts = ", ".join(f"{k}={v}" for k, v in method_options(name).items())
        typer.echo(f"{name:12s} {opts}")


def _zero_shot_cmd(model: str, tasks: str, task_data, task_dir, limit, as_json: bool) -> None:
    from .export import ExportFormatError, load_any  # noqa: PLC0415
    from .zeroshot import zero_shot  # noqa: PLC0415

    try:
        names = [t.strip() for t in tasks.split(",") if t.strip()]
        data = _parse_opts(task_data)
        lm, tok = load_any(model)
        res = zero_shot(lm, tok, names, task_data=data, include_path=task_dir, limit=limit)
    except (ValueError, FileNotFoundError, ExportFormatError) as e:
        _fail(e)
    if as_json:
        typer.echo(json.dumps(res, indent=2))
    else:
        for name, metrics in res.items():
            typer.echo(f"{name}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if "stderr" not in k))


@app.command()
def export(
    pruned: Path = typer.Argument(..., help="Pruned model folder (output of `maskopt prune`; its zeros are the mask)."),
    fmt: str = typer.Option("cs256", "--format", "-f", help="hf | compressed-tensors | cs256."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (written atomically)."),
    opt: Optional[List[str]] = typer.Option(None, "--opt", help="Format option KEY=VALUE: cs256 g=8 quant=none|int8|int4 qgroup=32 pad=false min_sparsity=0.1; compressed-tensors layout=auto|bitmask|2:4."),
    overwrite: bool = typer.Option(False, help="Replace --out if it exists."),
    as_json: bool = typer.Option(False, "--json", help="Print the export info as JSON."),
) -> None:
    """Write a pruned model in a serving format: compressed sparse tiles (cs256), compressed-tensors or HF."""
    from .export import ExportFormatError  # noqa: PLC0415
    from .export.api import coerce_options, export_folder  # noqa: PLC0415

    try:
        info = export_folder(pruned, out, fmt, overwrite=overwrite, **coerce_options(fmt, _parse_opts(opt)))
    except (ValueError, FileNotFoundError, FileExistsError, ExportFormatError) as e:
        _fail(e)
    if as_json:
        typer.echo(json.dumps(info, indent=2))
    else:
        kept, weights = info.get("kept"), info.get("weights")
        extra = f"; {kept}/{weights} weights kept in the sparse linears" if kept and weights else ""
        bits = f"; index {8 * info['index_bytes'] / kept:.2f} bits per kept weight" if kept and "index_bytes" in info else ""
        typer.echo(f"exported {pruned} as {info['format']} to {out}{extra}{bits}")


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
