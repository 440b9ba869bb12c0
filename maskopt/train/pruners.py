"""The pruning step of IMP / SMS: global or per-layer magnitude, or any registered one-shot method.

A pruner sets the pruned weights to exact zeros in place and returns the new masks; masks only
shrink (the previous mask is intersected), so IMP never revives a pruned weight.

Registered methods (``maskopt methods``) solve one ``LayerProblem(W, G, pattern, sparsity)`` per
layer. For a Hugging Face causal LM the full sequential pipeline (:func:`maskopt.prune`) is used;
for any other model, G = Σ x xᵀ is accumulated from the inputs of each prunable ``nn.Linear`` on the
workload's calibration batch (one forward pass of the current model).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import nn

from ..model.masks import apply_masks
from .masking import Masks, current_masks, magnitude_masks


@dataclass
class Pruner:
    """``method``: 'magnitude' or a registered method name (``options``).

    Unstructured magnitude pruning uses ``scope`` ('global': one threshold over all prunable weights,
    'layer': the same sparsity in every tensor); any other ``pattern`` ('per_row', 'N:M') and every other
    method go through the registered method's per-layer solve.
    """

    method: str = "magnitude"
    scope: str = "global"
    pattern: str = "unstructured"
    options: dict[str, Any] = field(default_factory=dict)
    nsamples: int = 32  # calibration windows of an LM pruned by a registered method

    def __post_init__(self) -> None:
        if self.method != "magnitude":
            from ..solve.methods import get_method  # noqa: PLC0415

            get_method(self.method, **self.options)  # unknown names/options fail now, not mid-run

    def __call__(self, model: nn.Module, weights: Mapping[str, nn.Parameter], sparsity: float,
                 calibration: Callable[[], Any] | None = None) -> Masks:
        old = current_masks(weights)
        if self.method == "magnitude" and self.pattern == "unstructured":
            new = magnitude_masks(weights, sparsity, self.scope)
            apply_masks(weights, new)
        else:
            if calibration is None:
                raise ValueError(f"pruning with {self.method!r} needs calibration data from the workload")
            self._solve(model, weights, sparsity, calibration())
            new = current_masks(weights)
        masks = {n: new[n] & old[n] for n in weights}
        apply_masks(weights, masks)
        return masks

    def _solve(self, model: nn.Module, weights: Mapping[str, nn.Parameter], sparsity: float, calib) -> None:
        from ..config import PruneConfig  # noqa: PLC0415

        was_training = model.training
        model.eval()
        try:
            if hasattr(getattr(model, "config", None), "model_type"):
                from ..run.job import prune  # noqa: PLC0415

                cfg = PruneConfig(method=self.method, sparsity=sparsity, pattern=self.pattern,
                                  method_options=dict(self.options), nsamples=calib.shape[0], seqlen=calib.shape[1],
                                  progress=False, reference=None, device="cpu")
                prune(model, calib, cfg)
            else:
                _prune_linears(model, weights, sparsity, calib, self.method, self.pattern, self.options)
        finally:
            model.train(was_training)


@torch.no_grad()
def _prune_linears(model: nn.Module, weights: Mapping[str, nn.Parameter], sparsity: float, inputs: torch.Tensor,
                   method: str, pattern: str, options: dict) -> None:
    """One forward pass collecting G = XᵀX at every prunable nn.Linear, then one LayerProblem per layer."""
    from ..solve.methods import get_method  # noqa: PLC0415
    from ..solve.problem import LayerProblem  # noqa: PLC0415

    from ..model.calibrate import GramCollector  # noqa: PLC0415

    owners = {id(m.weight): m for m in model.modules() if isinstance(m, nn.Linear)}
    modules = {}
    for name, w in weights.items():
        if id(w) not in owners:
            raise ValueError(f"registered methods prune nn.Linear weights only; {name} is not one")
        modules[name] = owners[id(w)]
    collector = GramCollector(modules)
    try:
        model(inputs)
    finally:
        collector.remove()
    solver = get_method(method, **options)
    for name, w in weights.items():
        problem = LayerProblem(w.detach().float(), collector.grams[name].float(), pattern, sparsity, name=name)
        sol = solver.solve(problem)
        new = (sol.weight if sol.weight is not None else problem.W) * sol.mask
        w.copy_(new.to(w.dtype))
