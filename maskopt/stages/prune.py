"""The prune stage: walk the blocks, solve every layer problem, apply, record.

Per block: G = Σ x xᵀ of every shared-input group from the dense block on the pruned model's inputs,
one LayerProblem(W, G, pattern, sparsity) per linear, the method's mask (and possibly new weights)
applied, the per-layer record (error, the Wanda reference, an optional certificate) appended to the
report, then the pruned block produces the next block's inputs. With ``match='dense'`` the unchanged
model's activations come along (the walker's twin stream) and each layer solves the same problem with
W' = W C G⁻¹, C = X_d X_pᵀ: the mask and weights then answer for the error made upstream as well.
"""
from __future__ import annotations

import time

import torch
from torch import nn

from .. import distributed
from ..config import PruneConfig
from ..model.adapters import Adapter
from ..model.calibrate import BlockWalker, collect_cross_grams, collect_grams
from ..report import LayerRecord, jsonable
from ..select import matches
from ..solve.lstsq import dense_target, layer_lstsq
from ..solve.allocation import outlier_share, owl_sparsities
from ..solve import layer_math
from ..solve.methods import get_method
from ..solve.problem import LayerProblem, Solution
from ..solve.progress import reporting_to
from ..solve.warm import existing_layout, mask_from_pruned
from . import Stage, register_stage


def apply_solution(adapter: Adapter, module: nn.Module, problem: LayerProblem, sol: Solution) -> None:
    """Write the masked (and possibly updated) weights back; infeasible masks are bugs, never applied."""
    if not problem.is_feasible(sol.mask):
        raise RuntimeError(f"method returned an infeasible mask for {problem.name} (pattern {problem.pattern})")
    W = sol.weight if sol.weight is not None else problem.W
    adapter.set_weight(module, (W * sol.mask).to(problem.W.dtype))


def measured_sparsity(model: nn.Module, adapter: Adapter, skip: set[str] = frozenset()) -> float:
    """Zeros over the prunable weights (those of the layers in ``skip``, left dense on purpose, aside)."""
    zeros = total = 0
    for name, mod in adapter.named_linears(model).items():
        if name in skip:
            continue
        zeros += int((mod.weight == 0).sum())
        total += mod.weight.numel()
    return zeros / max(total, 1)


def solve_sharded(method, problem: LayerProblem) -> Solution:
    """``method.solve(problem)``, with the rows shared out over the ranks of a torchrun job when the pattern
    makes them independent (per-row, N:M); every rank returns the gathered full solution."""
    n = distributed.world()
    if n == 1 or not problem.pattern.rowwise or problem.rows < n:
        return method.solve(problem)
    sl = distributed.row_shard(problem.rows)
    part = method.solve(LayerProblem(problem.W[sl], problem.G, problem.pattern, problem.sparsity, name=problem.name,
                                     seed=problem.seed,
                                     warm_mask=problem.warm_mask[sl] if problem.warm_mask is not None else None))
    mask = distributed.gather_rows(part.mask, problem.rows)
    weight = distributed.gather_rows(part.weight, problem.rows) if part.weight is not None else None
    rows_by_rank = distributed.all_values(part.mask.shape[0])  # what each rank actually solved
    return Solution(mask, weight, {**part.info, "ranks": n, "info_of_rows": [sl.start, sl.stop],
                                   "rows_by_rank": rows_by_rank})


@register_stage("prune")
class PruneStage(Stage):
    """Prune every prunable linear, block by block (options: a PruneConfig)."""

    name = "prune"
    Options = PruneConfig
    walks = True
    needs_windows = True
    changes = "blocks"

    def run(self, ctx) -> None:
        config: PruneConfig = self.options
        t0 = time.time()
        adapter, device = ctx.adapter, ctx.device
        method = get_method(config.method, **config.method_options)
        reference = get_method(config.reference) if config.reference and config.reference != config.method else None
        certify_layer = None
        if config.certify:
            from ..certify import certify_layer  # noqa: PLC0415
        report = ctx.report
        windows = ctx.calibration()
        report.config = {**config.to_dict(), "nsamples": int(windows.shape[0]), "seqlen": int(windows.shape[1]),
                         **{k: v for k, v in report.config.items() if k == "block_sparsity"}}
        selection = config.selection()
        named = adapter.named_linears(ctx.model)
        report.dense_layers = [] if selection.everything else selection.check_against(named)
        if report.dense_layers:
            ctx.log(f"{len(report.dense_layers)} of {len(named)} linears left dense (targets/ignore)")
        if config.allocation == "owl" and "block_sparsity" not in report.config:  # kept over resumes
            report.config["block_sparsity"] = self._owl(ctx, windows)
        block_sparsity = report.config.get("block_sparsity")
        self._check_counts(ctx, block_sparsity)
        use_cache = getattr(ctx.model.config, "use_cache", None)
        ctx.model.config.use_cache = False
        walker = BlockWalker(ctx.model, adapter, windows, device=device, batch_size=ctx.batch_size,
                             offload=ctx.offload, desc=f"pruning ({config.method})", progress=ctx.progress,
                             twin=config.match == "dense", twin_by_caller=config.match == "dense",
                             **ctx.walker_options())
        try:
            for step in walker:
                if config.match == "dense":  # its dense forward is the twin stream's step too
                    grams, crosses, step.twin_outputs = collect_cross_grams(step.block, adapter, step.inputs,
                                                                            step.dense_inputs, device)
                else:
                    grams, crosses = collect_grams(step.block, adapter, step.inputs, device), {}
                block_s = block_sparsity[step.index] if block_sparsity else config.sparsity
                for name, module in adapter.linears(step.block).items():
                    full = adapter.layer_name(step.index, name)
                    if not selection.chosen(full, module):
                        continue
                    sparsity = selection.sparsity(full, module, block_s)
                    what = f"{config.method}: {name} ({module.weight.shape[0]}×{module.weight.shape[1]})"
                    walker.status(what)
                    with reporting_to(lambda text, what=what: walker.status(f"{what}, {text}")):
                        # popped: a group's Gram is freed with its last layer
                        C = crosses.pop(name, None)
                        if config.match_layers and not any(matches(p, full, module) for p in config.match_layers):
                            C = None  # this layer keeps the usual problem
                        rec, sol = self._solve(adapter, module, full, grams.pop(name), sparsity, method, reference,
                                               certify_layer, ctx.warm_masks.get(full), C)
                    walker.status(f"{config.method}: {name} done in {rec.seconds:.1f} s")
                    report.layers.append(rec)
                    ctx.masks[full] = adapter.param_layout(sol.mask).cpu()
        finally:
            ctx.model.config.use_cache = use_cache
        report.sparsity = (measured_sparsity(ctx.model, adapter, skip=set(report.dense_layers)) if ctx.stream is None
                           else 1.0 - sum(int(m.sum()) for m in ctx.masks.values()) / max(1, sum(m.numel() for m in ctx.masks.values())))
        report.prune_seconds += time.time() - t0

    def _check_counts(self, ctx, block_sparsity: list[float] | None) -> None:
        """Every layer's kept count from its shape alone, before any work: a pattern that cannot hold the
        sparsity at some layer (e.g. cs256 rounding a row to nothing) fails here, not half-way through."""
        from ..solve.patterns import Pattern  # noqa: PLC0415

        config: PruneConfig = self.options
        pattern = Pattern.parse(config.pattern)
        selection = config.selection()
        for i, block in enumerate(ctx.adapter.get_blocks(ctx.model)):
            for name, module in ctx.adapter.linears(block).items():
                full = ctx.adapter.layer_name(i, name)
                if not selection.chosen(full, module):
                    continue
                sparsity = selection.sparsity(full, module, block_sparsity[i] if block_sparsity else config.sparsity)
                rows, d = ctx.adapter.get_weight(module).shape
                try:
                    pattern.keep_per_group(rows, d, sparsity)
                except ValueError as e:
                    raise ValueError(f"{full}: {e}") from None

    def _owl(self, ctx, windows: torch.Tensor) -> list[float]:
        """OWL block sparsities from the dense model's Wanda scores (one walk, nothing changed)."""
        config: PruneConfig = self.options
        selection = config.selection()
        shares = []
        for step in BlockWalker(ctx.model, ctx.adapter, windows, device=ctx.device, batch_size=ctx.batch_size,
                                offload=ctx.offload, desc="OWL outlier shares", progress=ctx.progress,
                                source=ctx.stream):
            grams = collect_grams(step.block, ctx.adapter, step.inputs, ctx.device)
            scores = [ctx.adapter.get_weight(m).abs() * grams[n].diagonal().clamp_min(0).sqrt().to(m.weight.dtype)
                      for n, m in ctx.adapter.linears(step.block).items()
                      if selection.chosen(ctx.adapter.layer_name(step.index, n), m)]
            shares.append(outlier_share(scores, config.owl_m) if scores else 0.0)  # the chosen layers' outliers
        s = owl_sparsities(shares, config.sparsity, config.owl_lambda)
        ctx.log("OWL block sparsities: " + ", ".join(f"{x:.3f}" for x in s))
        return s

    def _solve(self, adapter: Adapter, module: nn.Module, full: str, G: torch.Tensor, sparsity: float, method,
               reference, certify_layer, warm: torch.Tensor | None = None,
               C: torch.Tensor | None = None) -> tuple[LayerRecord, Solution]:
        config: PruneConfig = self.options
        t = time.time()
        W = adapter.get_weight(module).to(torch.float32)
        shift = None
        if C is not None:  # match='dense': the same problem with W' = W C G⁻¹
            W_dense, W = W, dense_target(W, G, C, damp=config.match_damp, strength=config.match_strength).to(torch.float32)
            shift = float(layer_math.row_errors_f64(W - W_dense, G).sum()
                          / max(layer_math.row_errors_f64(W_dense, G).sum().item(), 1e-300)) ** 0.5
        G = G.to(torch.float32)  # the float64 Gram is freed here when this is its group's last layer
        if warm is not None:
            problem, sol = _solve_from_existing(method, W, G, warm.to(W.device), full, config.seed)
        else:
            problem = LayerProblem(W, G, config.pattern, sparsity, name=full, seed=config.seed)
            sol = solve_sharded(method, problem)
        if config.refit:
            mask_error = problem.error(sol.mask, sol.weight)
            sol = Solution(sol.mask, layer_lstsq(problem.W, problem.G, sol.mask).to(problem.dtype),
                           {**sol.info, "error_before_refit": mask_error})
        err = problem.error(sol.mask, sol.weight)
        energy = max(problem.dense_energy(), 1e-300)
        rec = LayerRecord(full, (problem.rows, problem.d), problem.kept_fraction, err, err / energy,
                          info=jsonable(sol.info))
        if shift is not None:
            rec.info["match_shift"] = shift  # ‖(W' − W) X_p‖ / ‖W X_p‖
        if reference is not None:
            rec.reference_error = problem.error(reference.solve(problem).mask)
            rec.reference_relative_error = rec.reference_error / energy
        elif config.reference:
            rec.reference_error, rec.reference_relative_error = rec.error, rec.relative_error
        if certify_layer is not None:
            rec.info["certificate"] = jsonable(certify_layer(problem, sol.mask, shift=config.certify_shift,
                                                             weight=sol.weight).as_dict())
        apply_solution(adapter, module, problem, sol)
        rec.seconds = time.time() - t
        return rec, sol


def _solve_from_existing(method, W: torch.Tensor, G: torch.Tensor, warm: torch.Tensor, name: str,
                         seed: int) -> tuple[LayerProblem, Solution]:
    """Polish a mask that exists already (``warm``, True = kept) without changing any row's count: the rows are
    solved in the groups of ``existing_layout`` (N:M, or per row at each count), each warm-started from its part of
    ``warm``. The problem returned states the whole layer at its overall count (unstructured, or the N:M)."""
    layout = existing_layout(warm, name)
    mask = torch.zeros_like(warm, dtype=torch.bool)
    weight, infos = None, []
    for rows, pattern, sparsity in layout:
        sub = LayerProblem(W[rows], G, pattern, sparsity, name=name, seed=seed)
        sub.warm_mask = mask_from_pruned(warm[rows].to(W.dtype), W[rows], sub)
        sol = solve_sharded(method, sub)
        mask[rows] = sol.mask
        if sol.weight is not None:
            weight = W.clone() if weight is None else weight
            weight[rows] = sol.weight.to(W.dtype)
        infos.append(sol.info)
    if layout[0][1].kind == "nm":
        problem = LayerProblem(W, G, layout[0][1], layout[0][2], name=name, seed=seed)
    else:
        total, kept = mask.numel(), int(mask.sum())
        problem = LayerProblem(W, G, "unstructured", (total - kept + 0.5) / total, name=name, seed=seed)
    info = {"existing_groups": len(layout), "existing_pattern": str(layout[0][1]) if len(layout) == 1 else "rows by count"}
    for k in infos[0]:
        vals = [i.get(k) for i in infos]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            info[k] = sum(vals)
    return problem, Solution(mask, weight, info)
