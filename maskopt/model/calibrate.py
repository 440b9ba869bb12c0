"""Sequential calibration: capture the inputs of block 0, then walk the blocks.

Per block: accumulate G = Σ x xᵀ for every group of linear layers that share an
input, let a callback change the block (prune, reconstruct), and run the changed
block to produce the next block's inputs. Only the current block needs to live on
the compute device; keyword arguments the blocks need (attention mask, position
ids / rotary embeddings) are captured from the model's own forward, never re-derived.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from torch import nn
from tqdm.auto import tqdm

from .adapters import Adapter


@dataclass
class Batch:
    """One batch of a block's inputs: hidden states plus the other arguments of its forward."""

    hidden: torch.Tensor
    args: tuple = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


class _Stop(Exception):
    pass


def map_tensors(fn: Callable[[torch.Tensor], torch.Tensor], x: Any) -> Any:
    """Apply ``fn`` to every tensor inside nested tuples / lists / dicts (block arguments); keep the rest."""
    if isinstance(x, torch.Tensor):
        return fn(x)
    if isinstance(x, tuple):
        return tuple(map_tensors(fn, v) for v in x)
    if isinstance(x, list):
        return [map_tensors(fn, v) for v in x]
    if isinstance(x, dict):
        return {k: map_tensors(fn, v) for k, v in x.items()}
    return x


def _to(x: Any, device: torch.device | str) -> Any:
    return map_tensors(lambda t: t.to(device), x)


@torch.no_grad()
def capture_block_inputs(
    model: nn.Module, adapter: Adapter, windows: torch.Tensor, device: torch.device, batch_size: int = 8,
    store_device: torch.device | str = "cpu",
) -> list[Batch]:
    """Run the model up to block 0 on every batch of windows and keep what block 0 receives."""
    blocks = adapter.get_blocks(model)
    captured: list[Batch] = []

    def hook(_module: nn.Module, args: tuple, kwargs: dict) -> None:
        hidden = args[0] if args else kwargs.pop("hidden_states")
        kwargs = {k: v for k, v in kwargs.items() if k not in ("past_key_value", "past_key_values", "layer_past")}
        kwargs["use_cache"] = False
        captured.append(Batch(hidden.to(store_device), _to(args[1:], store_device), _to(kwargs, store_device)))
        raise _Stop

    handle = blocks[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for i in range(0, windows.shape[0], batch_size):
            try:
                model(input_ids=windows[i : i + batch_size].to(device), use_cache=False)
            except _Stop:
                pass
    finally:
        handle.remove()
    return captured


def block_output(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


@torch.no_grad()
def run_block(block: nn.Module, batches: list[Batch], device: torch.device) -> list[Batch]:
    """The block's outputs as the next block's inputs (same extra arguments)."""
    outs = []
    for b in batches:
        h = block_output(block(b.hidden.to(device), *_to(b.args, device), **_to(b.kwargs, device)))
        outs.append(Batch(h.to(b.hidden.device), b.args, b.kwargs))
    return outs


class GramCollector:
    """Forward pre-hooks that accumulate G = Σ_tokens x xᵀ (float64) for named linear layers."""

    def __init__(self, modules: dict[str, nn.Module]):
        self.grams: dict[str, torch.Tensor] = {}
        self.tokens: dict[str, int] = {}
        self._handles = [m.register_forward_pre_hook(self._hook(name)) for name, m in modules.items()]

    def _hook(self, name: str) -> Callable:
        def hook(_module: nn.Module, args: tuple) -> None:
            x = args[0].detach()
            x = x.reshape(-1, x.shape[-1]).to(torch.float32)
            g = (x.T @ x).to(torch.float64)
            if name in self.grams:
                self.grams[name] += g
                self.tokens[name] += x.shape[0]
            else:
                self.grams[name] = g
                self.tokens[name] = x.shape[0]

        return hook

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


@torch.no_grad()
def collect_grams(block: nn.Module, adapter: Adapter, batches: list[Batch], device: torch.device) -> dict[str, torch.Tensor]:
    """G for the first layer of every shared-input group (one forward of the dense block)."""
    firsts = {group[0]: block.get_submodule(group[0]) for group in adapter.linear_groups}
    collector = GramCollector(firsts)
    try:
        run_block(block, batches, device)
    finally:
        collector.remove()
    grams = {}
    for group in adapter.linear_groups:
        for name in group:
            grams[name] = collector.grams[group[0]]
    return grams


@contextmanager
def on_device(module: nn.Module, device: torch.device, offload: bool) -> Iterator[nn.Module]:
    """Move a block to the compute device for the duration; back to CPU afterwards when offloading."""
    module.to(device)
    try:
        yield module
    finally:
        if offload and device.type != "cpu":
            module.to("cpu")


def _move_non_blocks(model: nn.Module, adapter: Adapter, device: torch.device) -> None:
    """Put everything except the decoder blocks on the compute device (embeddings, rotary, norms)."""
    prefix = adapter.blocks + "."
    for name, mod in model.named_modules():
        if name == adapter.blocks or name.startswith(prefix):
            continue
        mod._apply(lambda t: t.to(device), recurse=False)
    if hasattr(model, "tie_weights"):
        model.tie_weights()


def walk_blocks(
    model: nn.Module,
    adapter: Adapter,
    windows: torch.Tensor,
    step: Callable[[int, nn.Module, list[Batch]], None],
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 8,
    offload: bool = True,
    desc: str = "blocks",
    progress: bool = True,
) -> None:
    """Sequential pass: for each block, ``step(index, block, inputs)`` may change the block in place;
    then the changed block is run to produce the next block's inputs."""
    device = torch.device(device)
    if offload and device.type != "cpu":
        _move_non_blocks(model, adapter, device)
    else:
        model.to(device)
    batches = capture_block_inputs(model, adapter, windows, device, batch_size,
                                   store_device="cpu" if offload else device)
    if not batches:
        raise ValueError("no calibration inputs were captured (empty calibration data)")
    blocks = adapter.get_blocks(model)
    for i in tqdm(range(len(blocks)), desc=desc, disable=not progress):
        with on_device(blocks[i], device, offload):
            step(i, blocks[i], batches)
            batches = run_block(blocks[i], batches, device)
        for b in batches:
            if not torch.isfinite(b.hidden).all():
                raise FloatingPointError(f"block {i} produced NaN/Inf activations")
    if offload and device.type != "cpu":
        model.to("cpu")
        if hasattr(model, "tie_weights"):
            model.tie_weights()
