"""The certify stage: per layer of a pruned model, the error of its mask and a certified lower bound.

G is accumulated as during pruning: the dense block's linear inputs on the pruned model's block
inputs (one walk over the pruned model with the dense blocks alongside).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from ..certify.bounds import certify_layer
from ..model.calibrate import BlockWalker, collect_grams
from ..report import jsonable
from ..solve.problem import LayerProblem
from ..solve.warm import mask_from_pruned
from . import Stage, register_stage


def layer_sparsity(kept_fraction: float, shape: tuple[int, int], pattern: str) -> float:
    """The sparsity that gives a layer of ``shape`` the kept count its pruning run recorded (as a fraction)."""
    from ..solve.patterns import Pattern  # noqa: PLC0415

    _, size = Pattern.parse(pattern).group_shape(*shape)
    keep = round(kept_fraction * size)
    return (size - keep + 0.5) / size


@dataclass
class CertifyOptions:
    pattern: str = "per_row"  # pattern of the masks
    sparsity: float = 0.5  # sparsity of the masks
    iterations: int = 300  # iterations of the root relaxation per layer
    bnb_rows: int = 0  # deepen the bound of the first N rows of every layer by branch-and-bound
    bnb_time_limit: float = 1.0  # seconds of branch-and-bound per selected row
    shift: Literal["opt", "jacobi", "layer", "rowwise"] = "opt"  # root bound: optimised layer shift (default), Jacobi (cheapest), older barrier shifts
    refit: bool = True  # also certify the refit problem against the shipped weights (refit_gap)
    time_budget: float = 0.0  # extra seconds spent deepening the bounds of the layers with the largest gaps

    def __post_init__(self) -> None:
        if not 0 <= self.sparsity < 1:
            raise ValueError(f"certify: --sparsity must lie in [0, 1), got {self.sparsity}")
        if self.iterations < 1:
            raise ValueError(f"certify: --iterations must be ≥ 1, got {self.iterations}")
        if self.bnb_rows < 0:
            raise ValueError(f"certify: --bnb-rows must be ≥ 0 (rows per layer), got {self.bnb_rows}")
        if not self.bnb_time_limit > 0:
            raise ValueError(f"certify: --bnb-time-limit must be > 0 seconds, got {self.bnb_time_limit}")
        if not self.time_budget >= 0:
            raise ValueError(f"certify: --time-budget must be ≥ 0 seconds, got {self.time_budget}")


@register_stage("certify")
class CertifyStage(Stage):
    """Certified lower bound and gap (err − LB)/err of every layer's mask; results in report.certificates."""

    name = "certify"
    Options = CertifyOptions
    walks = True
    needs_dense = True
    needs_windows = True

    def run(self, ctx) -> None:
        o: CertifyOptions = self.options
        adapter = ctx.adapter
        if ctx.resume is None:
            ctx.report.certificates = []
        walker = BlockWalker(ctx.model, adapter, ctx.calibration(), device=ctx.device, batch_size=ctx.batch_size,
                             offload=ctx.offload, dense_model=ctx.dense_model(), desc="certifying",
                             progress=ctx.progress, **ctx.walker_options())
        dense = set(ctx.report.dense_layers)
        kept = {r.name: r.kept_fraction for r in ctx.report.layers}  # per-layer counts of the pruning run (OWL, overrides)
        budget = None
        if o.time_budget > 0 and o.shift == "opt":
            from ..certify.budget import GapBudget  # noqa: PLC0415

            budget = GapBudget(o.time_budget, device=ctx.device)
        for step in walker:
            grams = collect_grams(step.dense_block, adapter, step.inputs, ctx.device)
            dlin, plin = adapter.linears(step.dense_block), adapter.linears(step.block)
            for name in adapter.linear_names():
                full = adapter.layer_name(step.index, name)
                if full in dense:  # left dense on purpose (targets/ignore): nothing to certify
                    continue
                Wd = adapter.get_weight(dlin[name]).to(torch.float32)
                sparsity = layer_sparsity(kept[full], Wd.shape, o.pattern) if full in kept else o.sparsity
                problem = LayerProblem(Wd, grams[name].to(torch.float32), o.pattern, sparsity, name=full)
                if full in ctx.masks:
                    mask = adapter.param_layout(ctx.masks[full]).to(Wd.device)
                    if not problem.is_feasible(mask):
                        raise ValueError(f"{full}: the saved mask does not fit pattern {o.pattern} at sparsity {sparsity:.4f}")
                else:
                    mask = mask_from_pruned(adapter.get_weight(plin[name]), Wd, problem)
                rows = (list(range(min(o.bnb_rows, problem.rows))) if o.bnb_rows and problem.pattern.rowwise else None)
                shipped = adapter.get_weight(plin[name]).to(torch.float32) if o.refit else None
                cert = certify_layer(problem, mask, iterations=o.iterations, rows=rows,
                                     bnb_time_limit=o.bnb_time_limit, shift=o.shift, refit=o.refit, weight=shipped)
                if budget is not None:
                    budget.offer(full, problem, mask, cert, shipped)
                ctx.report.certificates.append(_certificate_row(cert, problem, full))
        if budget is not None:  # the budget goes to the layers with the largest gaps, after the walk
            better = budget.spend()
            for i, row in enumerate(ctx.report.certificates):
                if row.get("name") in better:
                    per = row["relative_error"] / row["error"] if row["error"] > 0 else 0.0  # 1 / ‖WX‖²
                    new = {**row, **better[row["name"]].as_dict(), "relative_error": row["relative_error"]}
                    if "refit_lower_bound" in new:
                        new["refit_lower_bound_relative"] = new["refit_lower_bound"] * per
                    ctx.report.certificates[i] = jsonable(new)


def _certificate_row(cert, problem: LayerProblem, full: str) -> dict:
    """One layer of report.certificates: the certificate, its name and shape, and the errors relative to ‖WX‖²."""
    d = cert.as_dict()
    dense_energy = max(problem.dense_energy(), 1e-300)
    d.update(name=full, shape=[problem.rows, problem.d], relative_error=cert.error / dense_energy)
    if "shipped_error" in d:
        d.update(shipped_relative_error=d["shipped_error"] / dense_energy,
                 refit_lower_bound_relative=d["refit_lower_bound"] / dense_energy)
    return jsonable(d)
