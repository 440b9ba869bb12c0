"""Command line: maskopt prune | recover | certify | eval | methods. Builds stage lists; no logic of its own."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  context_settings={"max_content_width": 200, "help_option_names": ["-h", "--help"]},
                  help="maskopt — prune LLMs after training by optimization (SparseFW, SparseSwaps, exact B&B).")

# Errors a user can cause; anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, FloatingPointError, RuntimeError, OSError)


_O = dict(  # options that several commands share, declared once
    device=typer.Option(None, help="cpu, cuda, cuda:1 … (default: cuda if available)."),
    dtype=typer.Option("auto", "--dtype", help="Load and run the model in: auto (the checkpoint's own dtype) | bfloat16 | float16 | float32. Grams and solves are float32/float64 either way."),
    save_dtype=typer.Option("auto", "--save-dtype", help="Dtype of the saved model: auto (the checkpoint's own) | bfloat16 | float16 | float32."),
    threads=typer.Option(None, help="CPU threads (default: all cores)."),
    trust_remote_code=typer.Option(False, "--trust-remote-code", help="Allow a model folder's own Python code to run (auto_map). Off by default."),
    overwrite=typer.Option(False, help="Replace --out if it is an earlier maskopt output (never a folder or file maskopt did not write)."),
)


def _fail(e: Exception) -> None:
    msg = str(e) or type(e).__name__
    if isinstance(e, OSError) and getattr(e, "filename", None) and e.filename not in msg:
        msg = f"{msg}: {e.filename}"
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _log(quiet: bool):
    return (lambda _m: None) if quiet else typer.echo


def _threads(threads: Optional[int]) -> None:
    import torch  # noqa: PLC0415

    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be ≥ 1, got {threads}")
        torch.set_num_threads(threads)


def _batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"--batch-size must be ≥ 1 (sequences per forward pass), got {batch_size}")


def _recover_specs(recover: Optional[List[str]], reconstruct: Optional[str], recon_opt: Optional[List[str]],
                   perp: Optional[str], perp_opt: Optional[List[str]]) -> list:
    """The recovery stages, in order: every --recover NAME[:k=v,...], then the older --reconstruct / --perp."""
    from .options import parse_kv  # noqa: PLC0415
    from .stages import make_stage  # noqa: PLC0415

    if recon_opt and not reconstruct:
        raise ValueError(f"--recon-opt {recon_opt} given without --reconstruct")
    if perp_opt and not perp:
        raise ValueError(f"--perp-opt {perp_opt} given without --perp")
    stages = [make_stage(spec, "recover") for spec in recover or []]
    if reconstruct:
        stages.append(make_stage(reconstruct, "recover", parse_kv(recon_opt, "--recon-opt")))
    if perp:
        stages.append(make_stage(perp, "recover", parse_kv(perp_opt, "--perp-opt")))
    if reconstruct or perp:
        new = " ".join(f"--recover {s.name}" + (":" + ",".join(f"{k}={v}" for k, v in opts.items()) if opts else "")
                       for s, opts in zip(stages[len(recover or []):],
                                          [parse_kv(recon_opt)] * bool(reconstruct) + [parse_kv(perp_opt)] * bool(perp)))
        typer.secho(f"warning: --reconstruct/--perp (and their -opt flags) are deprecated; write {new}",
                    fg=typer.colors.YELLOW, err=True)
    return stages


def _overrides(items: Optional[List[str]]) -> dict:
    """--sparsity-override PATTERN=S … → {pattern: sparsity} (the last '=' splits: regexes may contain '=')."""
    out = {}
    for item in items or []:
        pat, sep, val = item.rpartition("=")
        if not sep or not pat:
            raise ValueError(f"--sparsity-override takes PATTERN=SPARSITY, got {item!r}")
        try:
            out[pat] = float(val)
        except ValueError:
            raise ValueError(f"--sparsity-override {item!r}: {val!r} is not a number") from None
    return out


def _eval_stage(texts, label: str, max_windows: Optional[int], seqlen: Optional[int] = None, cache: bool = False):
    from .perplexity import check_max_windows  # noqa: PLC0415
    from .stages import new_stage  # noqa: PLC0415

    return new_stage("evaluate", texts=[str(t) for t in texts], label=label, seqlen=seqlen,
                     max_windows=check_max_windows(max_windows), cache=cache)


def _print_perplexity(report) -> None:
    for text, v in report.perplexity.items():
        typer.echo(f"perplexity {text}: " + " → ".join(f"{k} {p:.2f}" for k, p in v.items()))


RECOVER_HELP = ("Recovery stage NAME[:k=v,...] (repeatable, run in order): matrix | subblock | block | blocks "
                "(reconstruction towards the dense model), norms_biases | masklora | scalelora (PERP retraining); "
                "e.g. --recover matrix --recover masklora:steps=200,lr=5e-4.")


@app.command()
def prune(
    ctx: typer.Context,
    model: Optional[str] = typer.Argument(None, help="HF model folder, .gguf file/folder, or hub id. Default: the tiny Llama in ../shared."),
    method: str = typer.Option("wanda", "--method", "-m", help="Mask method: see `maskopt methods`."),
    sparsity: float = typer.Option(0.5, "--sparsity", "-s", help="Fraction of prunable weights set to zero, in [0, 1). Ignored for N:M."),
    pattern: str = typer.Option("per_row", "--pattern", "-p", help="'per_row' (equal count per output row), 'unstructured' (per matrix), N:M such as 2:4 / 4:8 (keep N of every M inputs), or cs256 / cs256:G (per row, a multiple of G=8 per 256-input tile: fits `maskopt export --format cs256`)."),
    calib: Optional[List[str]] = typer.Option(None, "--calib", help="Calibration text file(s), folder of .txt, or a `datasets` name. Default: ../shared/data/english-calib/calib.txt."),
    nsamples: int = typer.Option(128, help="Number of calibration windows."),
    seqlen: Optional[int] = typer.Option(None, help="Tokens per calibration window (default min(2048, model context))."),
    seed: int = typer.Option(0, help="Seed of the calibration window sampling."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (HF checkpoint + masks + maskopt_report.json/.md/.png). Written atomically."),
    overwrite: bool = _O["overwrite"],
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Resume an interrupted run of the same command from its checkpoint (beside --out); --no-resume starts over."),
    eval_text: Optional[List[str]] = typer.Option(None, "--eval-text", help="Text file(s) for perplexity before and after. Default with the default model: english-heldout and WikiText-2."),
    no_eval: bool = typer.Option(False, "--no-eval", help="Skip perplexity evaluation."),
    eval_max_windows: Optional[int] = typer.Option(None, help="Cap on evaluation windows per text (0 = whole text; the default-model job uses 32)."),
    opt: Optional[List[str]] = typer.Option(None, "--opt", help="Method option KEY=VALUE (repeatable), e.g. --opt iterations=500."),
    certify: bool = typer.Option(False, help="Add a certified lower bound (root relaxation) and optimality gap per layer to the report."),
    refit: bool = typer.Option(False, "--refit", help="Least-squares update of every layer's kept weights after its mask (closed form from G, before the next block sees it)."),
    match: str = typer.Option("pruned", "--match", help="What each layer's pruned output must match: 'pruned' = its own dense weights on the pruned model's inputs (SparseGPT's layer problem), 'dense' = also the dense model's output at that layer (‖W X_dense − Ŵ X_pruned‖², weighted by --match-strength: undoes part of the error made upstream; costs one more forward per block, a second copy of the calibration activations and a second d×d matrix per input group)."),
    match_strength: Optional[float] = typer.Option(None, "--match-strength", help="With --match dense: α in (0, 1], each layer minimises (1 − α)·(its 'pruned' error) + α·(its 'dense' error) (default 0.25, chosen on the tuning text; α = 1 over-corrects)."),
    allocation: str = typer.Option("uniform", help="Sparsity per block: 'uniform', or 'owl' (outlier-weighted layer-wise sparsity: blocks with more activation outliers keep more; same global sparsity)."),
    owl_lambda: float = typer.Option(0.08, help="OWL: block sparsities lie within sparsity ± λ."),
    owl_m: float = typer.Option(5.0, help="OWL: a Wanda score is an outlier above M times its block's mean."),
    targets: Optional[List[str]] = typer.Option(None, "--targets", help="Prune only these linears (repeatable): a full name (model.layers.0.mlp.down_proj), a class name (Linear) or re:REGEX matched from the start of the name. Default: every linear of every block."),
    ignore: Optional[List[str]] = typer.Option(None, "--ignore", help="Leave these linears dense (repeatable; same patterns as --targets), e.g. --ignore 're:model.layers.0.mlp.down_proj'."),
    sparsity_override: Optional[List[str]] = typer.Option(None, "--sparsity-override", help="PATTERN=SPARSITY (repeatable, first match wins), e.g. 're:.*down_proj=0.4'."),
    recover: Optional[List[str]] = typer.Option(None, "--recover", help=RECOVER_HELP),
    reconstruct: Optional[str] = typer.Option(None, help="Recovery (older form of --recover): matrix | subblock | block | blocks."),
    recon_opt: Optional[List[str]] = typer.Option(None, "--recon-opt", help="Option KEY=VALUE of --reconstruct (lr, epochs, batch_size, n_blocks, dense_inputs, …)."),
    perp: Optional[str] = typer.Option(None, help="Recovery (older form of --recover): norms_biases | masklora | scalelora."),
    perp_opt: Optional[List[str]] = typer.Option(None, "--perp-opt", help="Option KEY=VALUE of --perp (lr, steps, epochs, r, alpha, …)."),
    batch_size: int = typer.Option(8, help="Calibration sequences per forward pass."),
    device: Optional[str] = _O["device"],
    dtype: str = _O["dtype"],
    save_dtype: str = _O["save_dtype"],
    threads: Optional[int] = _O["threads"],
    trust_remote_code: bool = _O["trust_remote_code"],
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or messages."),
    stream: bool = typer.Option(False, "--stream", help="Read one decoder block at a time from the checkpoint's safetensors and write the output as it goes: memory of about one block (prune and save; evaluate the output with `maskopt eval OUT --stream`)."),
    dense: Optional[str] = typer.Option(None, "--dense", help="With --opt warm_start=existing: the dense model that MODEL (pruned elsewhere, e.g. by llm-compressor) was pruned from; MODEL's zeros are the masks to polish (default: the model its maskopt report names)."),
    recipe: Optional[Path] = typer.Option(None, "--recipe", help="Run the stages of this recipe (YAML; see `maskopt run`) instead of the stage flags."),
    save_recipe: Optional[Path] = typer.Option(None, "--save-recipe", help="Write the recipe of this run to FILE (YAML): `maskopt run FILE` repeats it bit for bit."),
) -> None:
    """Prune a causal LM layer by layer (optionally recover) and save it with masks and a report."""
    from . import defaults  # noqa: PLC0415
    from .config import PruneConfig  # noqa: PLC0415
    from .run.job import JobInputs, run_job  # noqa: PLC0415
    from .options import parse_kv  # noqa: PLC0415
    from .run.device import resolve_device  # noqa: PLC0415
    from .solve.methods import get_method  # noqa: PLC0415
    from .stages import new_stage  # noqa: PLC0415

    if recipe is not None:
        _no_stage_flags(ctx, "--recipe")
        return _run_recipe(recipe, model, out, overwrite, resume, device, threads, quiet, trust_remote_code,
                           save_recipe, dtype, save_dtype)
    try:
        from .run.output import check_dir  # noqa: PLC0415

        is_default = model is None
        model_name = str(defaults.default_model()) if is_default else model
        calib_files = calib or [str(defaults.default_calib())]
        texts = [] if no_eval else (eval_text or ([str(p) for p in defaults.default_eval_texts()] if is_default else []))
        check_dir(out, overwrite, [model_name, *calib_files, *texts])
        _threads(threads)
        _batch_size(batch_size)
        resolve_device(device)
        if is_default and not eval_text and eval_max_windows is None:
            eval_max_windows = 32  # keeps the default job quick; pass --eval-max-windows 0 for whole texts
        cfg = PruneConfig(method=method, sparsity=sparsity, pattern=pattern, method_options=parse_kv(opt),
                          nsamples=nsamples, seqlen=seqlen, seed=seed, batch_size=batch_size, device=device,
                          certify=certify, refit=refit, match=match, allocation=allocation, owl_lambda=owl_lambda,
                          owl_m=owl_m, **({"match_strength": match_strength} if match_strength is not None else {}),
                          targets=list(targets or []), ignore=list(ignore or []),
                          sparsity_overrides=_overrides(sparsity_override), progress=not quiet)
        get_method(cfg.method, **cfg.method_options)  # every option checked before any model is loaded
        warm_from, model_name = _existing(cfg, model, dense, model_name)
        stages = [_eval_stage(texts, "dense", eval_max_windows, cache=True)] if texts else []
        stages += [new_stage("prune", cfg), *_recover_specs(recover, reconstruct, recon_opt, perp, perp_opt)]
        stages += [_eval_stage(texts, "pruned", eval_max_windows)] if texts else []
        stages.append(new_stage("save", overwrite=overwrite))
        calibration = {"texts": [str(c) for c in calib_files], "nsamples": nsamples, "seqlen": seqlen, "seed": seed,
                       "batch_size": batch_size}
        inputs = JobInputs(model_name, calib_files, nsamples, seqlen, seed, device, batch_size,
                           trust_remote_code=trust_remote_code, progress=not quiet, eval_texts=texts,
                           dtype=dtype, save_dtype=save_dtype, stream=stream,
                           recipe=_recipe_of(stages, calibration, model_name, save_recipe, overwrite,
                                             [model_name, *calib_files, warm_from], warm_from), warm_from=warm_from)
        report = run_job(stages, inputs, out=out, resume=resume, log=_log(quiet))
        _write_recipe(save_recipe, inputs.recipe, overwrite)
    except USER_ERRORS as e:
        _fail(e)
    _prune_summary(report, out)


def _existing(cfg, model: Optional[str], dense: Optional[str], model_name: str):
    """(warm_from, the model to prune): polishing MODEL's own zeros (``warm_start=existing``) prunes its dense model
    with MODEL's masks as warm starts; otherwise (None, MODEL) and --dense is refused."""
    from .report import load_report  # noqa: PLC0415

    if not cfg.polishes_existing:
        if dense:
            raise ValueError("--dense is for polishing a model pruned elsewhere (--opt warm_start=existing)")
        return None, model_name
    if model is None:
        raise ValueError("warm_start=existing polishes MODEL's zeros: name the pruned model (and --dense)")
    dense_name = _dense_of(load_report(Path(model)) if Path(model).is_dir() else None, dense)
    if not dense_name:
        raise ValueError(f"polishing {model} needs the dense model it was pruned from: pass --dense DENSE")
    return model, dense_name


def _prune_summary(report, out) -> None:
    from .distributed import is_main  # noqa: PLC0415

    if not is_main():
        return
    _print_perplexity(report)
    ref = report.mean_reference_relative_error()
    typer.echo(f"sparsity {report.sparsity:.4f}; mean relative layer error {report.mean_relative_error():.4f}"
               + (f" (Wanda {ref:.4f})" if ref is not None else "") + f"; {report.wall_seconds:.1f} s; "
               f"report: {Path(out) / 'maskopt_report.md'}")


STAGE_FLAGS = ("method", "sparsity", "pattern", "calib", "nsamples", "seqlen", "seed", "eval_text", "no_eval",
               "eval_max_windows", "opt", "certify", "refit", "match", "match_strength", "allocation", "owl_lambda", "owl_m", "targets", "ignore",
               "sparsity_override", "recover", "reconstruct", "recon_opt", "perp", "perp_opt", "batch_size")


def _no_stage_flags(ctx: typer.Context, why: str) -> None:
    """With a recipe the stages come from the file: a stage flag on the command line would be ignored, so refuse it."""
    given = [n for n in STAGE_FLAGS if getattr(ctx.get_parameter_source(n), "name", None) == "COMMANDLINE"]
    if given:
        _fail(ValueError(f"{why} gives the stages and calibration: remove --{given[0].replace('_', '-')} (or put "
                         "it into the recipe)"))


def _recipe_of(stages, calibration: dict, model: Optional[str], save_recipe: Optional[Path], overwrite: bool,
               inputs_of=(), warm_from: Optional[str] = None) -> dict:
    """The recipe of a command-line run (recorded in the report); --save-recipe's file is checked now (an existing
    one is replaced only with --overwrite)."""
    from .recipe import Recipe  # noqa: PLC0415
    from .run.output import check_file  # noqa: PLC0415

    if save_recipe is not None:
        check_file(save_recipe, overwrite, [p for p in inputs_of if p])
    return Recipe.from_stages(stages, calibration, model=str(model) if model else None,
                              warm_from=str(warm_from) if warm_from else None).to_dict()


def _write_recipe(save_recipe: Optional[Path], recipe: Optional[dict], overwrite: bool) -> None:
    from .distributed import is_main  # noqa: PLC0415
    from .recipe import Recipe  # noqa: PLC0415
    from .run.output import write_text_output  # noqa: PLC0415

    if save_recipe is not None and recipe is not None and is_main():
        write_text_output(save_recipe, Recipe.load(recipe).to_yaml(), overwrite=overwrite)
        typer.echo(f"recipe written to {save_recipe} (maskopt run {save_recipe} repeats this run)")


def _run_recipe(recipe_path: Path, model: Optional[str], out: Optional[Path], overwrite: bool, resume: bool,
                device: Optional[str], threads: Optional[int], quiet: bool, trust_remote_code: bool,
                save_recipe: Optional[Path], dtype: str = "auto", save_dtype: str = "auto") -> None:
    from . import defaults  # noqa: PLC0415
    from .recipe import Recipe  # noqa: PLC0415
    from .run.device import resolve_device  # noqa: PLC0415
    from .run.job import JobInputs, run_job  # noqa: PLC0415
    from .run.output import check_dir  # noqa: PLC0415

    try:
        r = Recipe.load(recipe_path)
        stages = r.build(overwrite=overwrite, progress=not quiet, device=device)
        model_name = model or r.model or str(defaults.default_model())
        out = out if out is not None else (Path(r.out) if r.out else None)
        calib = list(r.calibration.get("texts") or [str(defaults.default_calib())])
        texts = [t for s in stages if s.name == "evaluate" for t in s.options.texts]
        warm_from = r.warm_from
        if any(s.name == "save" for s in stages):
            check_dir(out, overwrite, [model_name, *calib, *texts, recipe_path, *([warm_from] if warm_from else [])])
        elif out is not None:
            raise ValueError("--out given, but the recipe has no save stage")
        _threads(threads)
        resolve_device(device)
        c = r.calibration_settings()
        inputs = JobInputs(model_name, calib, c["nsamples"], c["seqlen"], c["seed"], device, c["batch_size"],
                           trust_remote_code=trust_remote_code, progress=not quiet, eval_texts=texts,
                           dtype=dtype, save_dtype=save_dtype,
                           recipe=_recipe_of(stages, {**r.calibration, "texts": calib}, model_name, save_recipe,
                                             overwrite, [model_name, *calib, warm_from], warm_from),
                           warm_from=warm_from)
        report = run_job(stages, inputs, out=out, resume=resume, log=_log(quiet))
        _write_recipe(save_recipe, inputs.recipe, overwrite)
    except USER_ERRORS as e:
        _fail(e)
    if out is not None:
        _prune_summary(report, out)
    else:
        _print_perplexity(report)


@app.command("run")
def run_cmd(
    recipe: Path = typer.Argument(..., help="Recipe file (YAML): calibration and a list of stages (see the README)."),
    model: Optional[str] = typer.Option(None, "--model", help="The model (default: the recipe's, else the tiny Llama in ../shared)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder of the save stage (default: the recipe's out)."),
    overwrite: bool = _O["overwrite"],
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Resume an interrupted run of the same recipe."),
    save_recipe: Optional[Path] = typer.Option(None, "--save-recipe", help="Write the recipe as run (defaults filled in) to FILE."),
    device: Optional[str] = _O["device"],
    dtype: str = _O["dtype"],
    save_dtype: str = _O["save_dtype"],
    threads: Optional[int] = _O["threads"],
    trust_remote_code: bool = _O["trust_remote_code"],
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or messages."),
) -> None:
    """Run a recipe: the stages of a YAML file (prune, recover, evaluate, certify, export, save) on a model."""
    _run_recipe(recipe, model, out, overwrite, resume, device, threads, quiet, trust_remote_code, save_recipe, dtype,
                save_dtype)


def _dense_of(report, dense: Optional[str]) -> Optional[str]:
    """The dense model of a pruned folder: --dense, else the resolved model path its report recorded."""
    if dense:
        return dense
    if report is None:
        return None
    rec = (report.inputs or {}).get("model") or {}
    return rec.get("path") or rec.get("name") or report.model or None


def _pruned_folder(pruned: Path) -> None:
    if not pruned.exists():
        raise FileNotFoundError(f"pruned model folder {pruned} does not exist")
    if not pruned.is_dir():
        raise ValueError(f"{pruned} is not a folder (expected the output folder of `maskopt prune`)")


@app.command()
def recover(
    pruned: Path = typer.Argument(..., help="Pruned model folder (its saved masks, or its zeros, are kept)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (written atomically)."),
    recover_: Optional[List[str]] = typer.Option(None, "--recover", help=RECOVER_HELP + " Default: masklora (PERP MaskLoRA; on SmolLM2 the best stage that needs no lr tuning)."),
    dense: Optional[str] = typer.Option(None, help="Dense model for reconstruction targets (default: from the report)."),
    calib: Optional[List[str]] = typer.Option(None, "--calib", help="Calibration/training text(s) (default: ../shared english-calib)."),
    reconstruct: Optional[str] = typer.Option(None, help="Older form of --recover: matrix | subblock | block | blocks."),
    recon_opt: Optional[List[str]] = typer.Option(None, "--recon-opt", help="Option KEY=VALUE of --reconstruct."),
    perp: Optional[str] = typer.Option(None, help="Older form of --recover: norms_biases | masklora | scalelora."),
    perp_opt: Optional[List[str]] = typer.Option(None, "--perp-opt", help="Option KEY=VALUE of --perp."),
    nsamples: int = typer.Option(128, help="Calibration windows."),
    seqlen: Optional[int] = typer.Option(None, help="Tokens per window (default min(2048, context))."),
    seed: int = typer.Option(0, help="Seed of the window sampling."),
    eval_text: Optional[List[str]] = typer.Option(None, "--eval-text", help="Perplexity before and after on these texts."),
    eval_max_windows: Optional[int] = typer.Option(None, help="Cap on evaluation windows per text (0 = whole text)."),
    overwrite: bool = _O["overwrite"],
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Resume an interrupted run of the same command."),
    batch_size: int = typer.Option(8, help="Calibration sequences per forward pass."),
    device: Optional[str] = _O["device"],
    dtype: str = _O["dtype"],
    save_dtype: str = _O["save_dtype"],
    threads: Optional[int] = _O["threads"],
    trust_remote_code: bool = _O["trust_remote_code"],
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or messages."),
) -> None:
    """Recover quality of an already pruned model: reconstruction and/or PERP retraining; the mask is kept."""
    from . import defaults  # noqa: PLC0415
    from .run.job import JobInputs, run_job  # noqa: PLC0415
    from .run.output import check_dir  # noqa: PLC0415
    from .run.device import resolve_device  # noqa: PLC0415
    from .stages.recover import RECOMMENDED, RECOMMENDED_NO_DENSE  # noqa: PLC0415
    from .report import load_report  # noqa: PLC0415
    from .stages import make_stage, new_stage  # noqa: PLC0415

    log = _log(quiet)
    try:
        _pruned_folder(pruned)
        check_dir(out, overwrite, [pruned, dense, *(calib or [])])
        _threads(threads)
        _batch_size(batch_size)
        resolve_device(device)
        rec = _recover_specs(recover_, reconstruct, recon_opt, perp, perp_opt)
        report = load_report(pruned)
        dense_name = _dense_of(report, dense)
        if not rec and dense_name:
            rec = [make_stage(RECOMMENDED, "recover")]
            log(f"no recovery stage named: running the recommended one, --recover {RECOMMENDED} (dense: {dense_name})")
        elif not rec:
            rec = [make_stage(RECOMMENDED_NO_DENSE, "recover")]
            log(f"no recovery stage named and no dense model known: running --recover {RECOMMENDED_NO_DENSE} "
                f"(language-modelling loss; pass --dense for the recommended {RECOMMENDED}, which is better out of "
                "domain)")
        if any(s.needs_dense for s in rec) and not dense_name:
            raise ValueError(f"reconstruction and distillation (loss=kd) need the dense model: pass --dense ({pruned} "
                             "has no report naming it)")
        texts = eval_text or []
        stages = ([_eval_stage(texts, "before", eval_max_windows)] if texts else []) + rec
        stages += ([_eval_stage(texts, "after", eval_max_windows)] if texts else []) + [new_stage("save", overwrite=overwrite)]
        inputs = JobInputs(pruned, calib or [str(defaults.default_calib())], nsamples, seqlen, seed, device, batch_size,
                           dense=dense_name if any(s.needs_dense for s in rec) else None,
                           trust_remote_code=trust_remote_code, progress=not quiet, eval_texts=texts,
                           dtype=dtype, save_dtype=save_dtype)
        report = run_job(stages, inputs, out=out, resume=resume, report=report, log=log)
    except USER_ERRORS as e:
        _fail(e)
    _print_perplexity(report)


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
    shift: str = typer.Option("opt", help="Root bound: 'opt' (one optimised shift per layer, default), 'jacobi' (one scalar shift, cheapest, looser), 'layer' / 'rowwise' (older barrier shifts)."),
    time_budget: float = typer.Option(0.0, "--time-budget", help="Extra seconds spent deepening the bounds of the layers with the largest gaps (after the walk)."),
    refit: bool = typer.Option(True, "--refit/--no-refit", help="Also certify the shipped weights against the refit problem (mask chosen, kept weights re-solved)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the certificates as JSON to this file (never inside the pruned folder)."),
    overwrite: bool = typer.Option(False, help="Replace --out if that exact file exists."),
    batch_size: int = typer.Option(8, help="Calibration sequences per forward pass."),
    device: Optional[str] = _O["device"],
    dtype: str = _O["dtype"],
    threads: Optional[int] = _O["threads"],
    trust_remote_code: bool = _O["trust_remote_code"],
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Certified lower bound on the best possible error of every layer, and the gap (err − LB) / err of its mask."""
    from . import defaults  # noqa: PLC0415
    from .stages import new_stage  # noqa: PLC0415
    from .stages.certify import CertifyOptions  # noqa: PLC0415
    from .run.job import JobInputs, run_job  # noqa: PLC0415
    from .options import build_options  # noqa: PLC0415
    from .run.output import check_file, write_text_output  # noqa: PLC0415
    from .run.device import resolve_device  # noqa: PLC0415
    from .report import jsonable, load_report  # noqa: PLC0415

    try:
        _pruned_folder(pruned)
        read = [pruned, dense, *(calib or [])]
        if out is not None:
            check_file(out, overwrite, read)
        _threads(threads)
        _batch_size(batch_size)
        resolve_device(device)
        report = load_report(pruned)
        saved = report.config if report else {}
        dense_name = _dense_of(report, dense)
        if not dense_name:
            raise ValueError("no dense model: pass --dense (the pruned folder has no maskopt_report.json naming it)")
        sparsity = sparsity if sparsity is not None else saved.get("sparsity")
        if sparsity is None:
            raise ValueError("pass --sparsity (the pruned folder has no report stating it)")
        opts = build_options(CertifyOptions, {"pattern": pattern or saved.get("pattern", "per_row"),
                                              "sparsity": sparsity, "iterations": iterations, "bnb_rows": bnb_rows,
                                              "bnb_time_limit": bnb_time_limit, "shift": shift,
                                              "time_budget": time_budget, "refit": refit}, "certify")
        inputs = JobInputs(pruned, calib or [str(defaults.default_calib())], nsamples, seqlen, seed, device, batch_size,
                           dense=dense_name, trust_remote_code=trust_remote_code, progress=not quiet, dtype=dtype)
        rows = run_job([new_stage("certify", **opts)], inputs, report=report, log=_log(quiet)).certificates
        if out is not None:
            write_text_output(out, json.dumps(jsonable(rows), indent=2), overwrite, read)
    except USER_ERRORS as e:
        _fail(e)
    shipped = bool(rows) and all("refit_gap" in r for r in rows)
    typer.echo(f"{'layer':40s} {'rel.err':>9s} {'error':>12s} {'lower bnd':>12s} {'gap':>7s}"
               + (f" {'shipped':>12s} {'refit bnd':>12s} {'gap':>7s}" if shipped else ""))
    for r in rows:
        typer.echo(f"{r['name']:40s} {r['relative_error']:9.4f} {r['error']:12.5g} {r['lower_bound']:12.5g} {r['gap']:7.1%}"
                   + (f" {r['shipped_error']:12.5g} {r['refit_lower_bound']:12.5g} {r['refit_gap']:7.1%}" if shipped else ""))
    tot_e, tot_lb = sum(r["error"] for r in rows), sum(r["lower_bound"] for r in rows)
    mean = lambda k: sum(r[k] for r in rows) / max(len(rows), 1)  # noqa: E731
    typer.echo(f"total: error {tot_e:.5g}, certified lower bound {tot_lb:.5g}, gap {(tot_e - tot_lb) / max(tot_e, 1e-300):.1%}; "
               f"mean gap over layers {mean('gap'):.1%}" + (f", shipped weights vs refit bound {mean('refit_gap'):.1%}" if shipped else ""))
    if out is not None:
        typer.echo(f"certificates written to {out}")


@app.command("eval")
def eval_cmd(
    model: str = typer.Argument(..., help="Model folder (e.g. the output of `maskopt prune`), .gguf, or hub id."),
    text: Optional[List[str]] = typer.Option(None, "--text", help="Evaluation text file(s). Default: english-heldout and WikiText-2 in ../shared."),
    seqlen: Optional[int] = typer.Option(None, help="Window length (default min(2048, model context))."),
    max_windows: Optional[int] = typer.Option(None, help="Cap on windows per text (0 = whole text)."),
    device: Optional[str] = _O["device"],
    dtype: str = _O["dtype"],
    threads: Optional[int] = _O["threads"],
    trust_remote_code: bool = _O["trust_remote_code"],
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    tasks: Optional[str] = typer.Option(None, "--tasks", help="Zero-shot lm-eval tasks instead of perplexity, comma-separated, e.g. boolq,rte,hellaswag,winogrande,arc_easy,arc_challenge,openbookqa."),
    task_data: Optional[List[str]] = typer.Option(None, "--task-data", help="NAME=FILE: a bundled lm-eval task reads its evaluation split from this local .jsonl/.json/.csv/.parquet (the hub is unreachable)."),
    task_dir: Optional[Path] = typer.Option(None, "--task-dir", help="Folder of lm-eval task YAMLs with local data files."),
    task_data_dir: Optional[Path] = typer.Option(None, "--task-data-dir", help="Folder of NAME.validation.jsonl files: each task of --tasks without --task-data reads its own (e.g. ../shared/data/zeroshot)."),
    limit: Optional[int] = typer.Option(None, help="With --tasks: at most this many examples per task."),
    stream: bool = typer.Option(False, "--stream", help="Read one decoder block at a time from the checkpoint's safetensors: perplexity of a model larger than memory."),
) -> None:
    """Perplexity of a model (or of a `maskopt export` folder) on text files, or zero-shot accuracy with --tasks."""
    from . import defaults  # noqa: PLC0415
    from .run.job import JobInputs, run_job  # noqa: PLC0415
    from .perplexity import evaluate_texts  # noqa: PLC0415
    from .run.device import resolve_device  # noqa: PLC0415

    if tasks and stream:
        _fail(ValueError("--stream scores perplexity; zero-shot tasks (--tasks) need the whole model in memory"))
    if tasks:
        return _zero_shot_cmd(model, tasks, task_data, task_dir, limit, as_json, task_data_dir)
    try:
        if seqlen is not None and seqlen < 2:
            raise ValueError(f"--seqlen must be ≥ 2 tokens per window, got {seqlen}")
        _threads(threads)
        dev = resolve_device(device)
        texts = text or [str(p) for p in defaults.default_eval_texts()]
        if Path(model, "maskopt_export.json").is_file() and stream:
            raise ValueError("--stream reads HF safetensors folders; a `maskopt export` folder is loaded whole")
        if Path(model, "maskopt_export.json").is_file():  # an export of `maskopt export` (cs256, …)
            from .export import load_any  # noqa: PLC0415

            lm, tok = load_any(model)
            res = evaluate_texts(lm, tok, texts, seqlen=seqlen, max_windows=max_windows, device=dev,
                                 progress=not quiet)
        else:
            stage = _eval_stage(texts, "ppl", max_windows, seqlen)
            inputs = JobInputs(model, device=device, trust_remote_code=trust_remote_code, progress=not quiet, dtype=dtype,
                               eval_texts=texts, stream=stream)
            res = {k: v["ppl"] for k, v in run_job([stage], inputs, log=lambda _m: None).perplexity.items()}
    except USER_ERRORS as e:
        _fail(e)
    if as_json:
        typer.echo(json.dumps(res, indent=2))
    else:
        for k, v in res.items():
            typer.echo(f"{k}: perplexity {v:.3f}")


@app.command()
def methods() -> None:
    """The registered mask methods, what each does, and its options (set with --opt KEY=VALUE)."""
    from .options import defaults, field_docs  # noqa: PLC0415
    from .solve.methods import available  # noqa: PLC0415
    from .solve.methods.registry import method_class  # noqa: PLC0415
    from .stages import stage_info, stage_names  # noqa: PLC0415

    for name in available():
        cls = method_class(name)
        typer.echo(f"{name}: {_first_line(cls)}")
        docs = field_docs(cls)
        for k, v in defaults(cls).items():
            typer.echo(f"    {k}={v}" + (f"  — {docs[k]}" if docs.get(k) else ""))
    typer.echo("\nrecovery stages (--recover NAME[:k=v,...]):")
    for name in stage_names("recover"):
        cls, _, preset = stage_info(name)
        typer.echo(f"{name}: {_first_line(cls)}" + (f" ({preset})" if preset else ""))


def _first_line(cls: type) -> str:
    """The first line of a class's own docstring, else of its module's (dataclasses make up a signature)."""
    doc = cls.__doc__ or ""
    if not doc.strip() or doc.startswith(cls.__name__ + "("):
        doc = sys.modules[cls.__module__].__doc__ or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


from .train.cli import app as _train_app
app.add_typer(_train_app, name="train")


def _zero_shot_cmd(model: str, tasks: str, task_data, task_dir, limit, as_json: bool, task_data_dir=None) -> None:
    from .export import ExportFormatError, load_any  # noqa: PLC0415
    from .options import parse_kv  # noqa: PLC0415
    from .zeroshot import zero_shot  # noqa: PLC0415

    try:
        names = [t.strip() for t in tasks.split(",") if t.strip()]
        data = parse_kv(task_data, "--task-data")
        lm, tok = load_any(model)
        res = zero_shot(lm, tok, names, task_data=data, include_path=task_dir, limit=limit, task_data_dir=task_data_dir)
    except (*USER_ERRORS, ExportFormatError) as e:
        _fail(e)
    if as_json:
        typer.echo(json.dumps(res, indent=2))
    else:
        for name, metrics in res.items():
            typer.echo(f"{name}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if "stderr" not in k))


@app.command()
def export(
    pruned: Path = typer.Argument(..., help="Pruned model folder (output of `maskopt prune`; its stored masks, else its zeros, are the kept sets)."),
    fmt: str = typer.Option("cs256", "--format", "-f", help="hf | compressed-tensors | cs256."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (written atomically)."),
    opt: Optional[List[str]] = typer.Option(None, "--opt", help="Format option KEY=VALUE: cs256 g=8 quant=none|int8|int4 qgroup=32 pad=false min_sparsity=0.1; compressed-tensors layout=auto|bitmask|2:4."),
    overwrite: bool = _O["overwrite"],
    as_json: bool = typer.Option(False, "--json", help="Print the export info as JSON."),
) -> None:
    """Write a pruned model in a serving format: compressed sparse tiles (cs256), compressed-tensors or HF."""
    from .export import ExportFormatError  # noqa: PLC0415
    from .export.api import coerce_options, export_folder  # noqa: PLC0415
    from .options import parse_kv  # noqa: PLC0415

    try:
        info = export_folder(pruned, out, fmt, overwrite=overwrite, **coerce_options(fmt, parse_kv(opt)))
    except (*USER_ERRORS, ExportFormatError) as e:
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
