"""Units of reconstruction and how to get their inputs and outputs.

A unit is a piece of one or more decoder blocks with a single tensor input and output:
a prunable linear ('matrix'), the attention or MLP sub-module of a block ('subblock'), a block,
or n consecutive blocks. Inputs/outputs of units inside a block are taken with hooks during
the block's own forward (so every keyword argument the block passes is captured), and the
forward stops as soon as what is needed was seen.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from ..model.adapters import Adapter
from ..model.calibrate import Batch, StopForward, block_output, forward_until_stop, map_tensors, to_device


@dataclass
class Tap:
    """Where a unit sits inside a block: the input of ``entry`` and the output of ``exit`` (paths)."""

    entry: str
    exit: str


@dataclass
class UnitInput:
    """A unit's input for one batch: the hidden tensor, the other positional and keyword arguments,
    and the keyword under which the hidden tensor was passed (None: first positional)."""

    hidden: torch.Tensor
    args: tuple = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    hidden_kw: str | None = None

    def slice(self, sl: slice) -> "UnitInput":
        n = self.hidden.shape[0]
        return UnitInput(self.hidden[sl], _slice(self.args, sl, n), _slice(self.kwargs, sl, n), self.hidden_kw)


def _slice(x: Any, sl: slice, n: int) -> Any:
    """Slice tensors that carry the batch dimension (ndim ≥ 2 and size n in dim 0); others broadcast."""
    return map_tensors(lambda t: t[sl] if t.ndim >= 2 and t.shape[0] == n and n > 1 else t, x)


def cast_floats(x: Any, dtype: torch.dtype) -> Any:
    return map_tensors(lambda t: t.to(dtype) if t.is_floating_point() else t, x)


@dataclass
class Unit:
    """One unit: its name, block indices, the modules owning its parameters, its prunable linears
    (name → module, names relative to the block, prefixed 'i.' for multi-block units), its tap
    inside a block (None: the whole block(s)), and ``call(modules_root, UnitInput) → output``."""

    name: str
    blocks: list[int]
    owners: list[nn.Module]
    linears: dict[str, nn.Module]
    tap: Tap | None
    call: Callable[[UnitInput], torch.Tensor]
    closed_form: bool = False  # a single linear: least squares in closed form applies


def _run_blocks(blocks: list[nn.Module]) -> Callable[[UnitInput], torch.Tensor]:
    def call(x: UnitInput) -> torch.Tensor:
        h = x.hidden
        for b in blocks:
            h = block_output(b(h, *x.args, **x.kwargs))
        return h

    return call


def _run_until(block: nn.Module, path: str) -> Callable[[UnitInput], torch.Tensor]:
    """Run ``block`` on the unit input until module ``path`` is called; its input is the output."""
    target = block.get_submodule(path)

    def call(x: UnitInput) -> torch.Tensor:
        seen: dict[str, torch.Tensor] = {}

        def pre(_m: nn.Module, args: tuple) -> None:
            seen["h"] = args[0]
            raise StopForward

        handle = target.register_forward_pre_hook(pre)
        try:
            forward_until_stop(block, x.hidden, *x.args, **x.kwargs)
        finally:
            handle.remove()
        if "h" not in seen:
            raise RuntimeError(f"the block never called {path!r} in its forward")
        return seen["h"]

    return call


def _run_module(module: nn.Module) -> Callable[[UnitInput], torch.Tensor]:
    def call(x: UnitInput) -> torch.Tensor:
        if x.hidden_kw is None:
            return block_output(module(x.hidden, *x.args, **x.kwargs))
        return block_output(module(*x.args, **{x.hidden_kw: x.hidden}, **x.kwargs))

    return call


def _mlp_path(adapter: Adapter, block: nn.Module, index: int) -> Unit:
    """The MLP of a family without an MLP sub-module (OPT): first MLP linear → act → last MLP linear."""
    names = [n for n in adapter.linear_names() if not n.startswith(adapter.attn + ".")]
    act = getattr(block, "activation_fn", None)
    if len(names) != 2 or act is None:
        raise ValueError(
            f"sub-block reconstruction: the {adapter.family} adapter names no MLP sub-module and its MLP is not "
            f"a simple linear → activation_fn → linear path (linears {names}); use granularity 'block' or 'matrix'"
        )
    fc1, fc2 = (block.get_submodule(n) for n in names)

    def call(x: UnitInput) -> torch.Tensor:
        return fc2(act(fc1(x.hidden)))

    return Unit(f"block {index} mlp", [index], [fc1, fc2], {n: block.get_submodule(n) for n in names},
                Tap(names[0], names[1]), call)


UnitMaker = Callable[[Adapter, nn.ModuleList, list[int]], list[Unit]]
UNIT_MAKERS: dict[str, tuple[UnitMaker, bool]] = {}  # granularity → (maker, spans n blocks)


def unit_maker(granularity: str, multi_block: bool = False) -> Callable[[UnitMaker], UnitMaker]:
    """Register how a granularity cuts blocks into units (a new granularity is one function)."""

    def deco(fn: UnitMaker) -> UnitMaker:
        UNIT_MAKERS[granularity] = (fn, multi_block)
        return fn

    return deco


def make_units(adapter: Adapter, blocks: nn.ModuleList, indices: list[int], granularity: str) -> list[Unit]:
    """The units covering blocks ``indices`` (one block, or n for multi-block granularities), in forward order."""
    if granularity not in UNIT_MAKERS:
        raise ValueError(f"unknown granularity {granularity!r}; choose one of {sorted(UNIT_MAKERS)}")
    return UNIT_MAKERS[granularity][0](adapter, blocks, indices)


@unit_maker("blocks", multi_block=True)
@unit_maker("block")
def _block_units(adapter: Adapter, blocks: nn.ModuleList, indices: list[int]) -> list[Unit]:
    bs = [blocks[i] for i in indices]
    linears = {f"{i}.{n}": m for i, b in zip(indices, bs) for n, m in adapter.linears(b).items()}
    name = f"block {indices[0]}" if len(indices) == 1 else f"blocks {indices[0]}-{indices[-1]}"
    return [Unit(name, list(indices), bs, linears, None, _run_blocks(bs))]


@unit_maker("matrix")
def _matrix_units(adapter: Adapter, blocks: nn.ModuleList, indices: list[int]) -> list[Unit]:
    (i,) = indices
    return [Unit(f"block {i} {n}", [i], [m], {n: m}, Tap(n, n), _run_module(m), closed_form=True)
            for n, m in adapter.linears(blocks[i]).items()]


@unit_maker("subblock")
def _subblock_units(adapter: Adapter, blocks: nn.ModuleList, indices: list[int]) -> list[Unit]:
    (i,) = indices
    block = blocks[i]
    lin = adapter.linears(block)
    units = []
    for kind, path in (("attn", adapter.attn), ("mlp", adapter.mlp)):
        if not path:
            units.append(_mlp_path(adapter, block, i))
            continue
        mod = block.get_submodule(path)
        mine = {n: m for n, m in lin.items() if n.startswith(path + ".")}
        units.append(Unit(f"block {i} {kind}", [i], [mod], mine, Tap(path, path), _run_module(mod)))
    covered = {n for u in units for n in u.linears}
    missing = set(lin) - covered
    if missing:
        raise ValueError(f"sub-block units of {adapter.family} miss prunable linears {sorted(missing)}")
    return units


@unit_maker("subblock_residual")
def _subblock_residual_units(adapter: Adapter, blocks: nn.ModuleList, indices: list[int]) -> list[Unit]:
    """Attention and MLP as units whose targets are the residual stream after them (not the module outputs):
    the attention unit runs the block up to the residual sum after attention, the MLP unit the whole block
    with only the MLP's linears trained, so pruned inputs can also correct drift already in the stream."""
    (i,) = indices
    if not adapter.attn_out_norm:
        raise ValueError(f"residual targets need the module after the attention residual; the {adapter.family} "
                         "adapter names none (parallel attention and MLP); use granularity 'subblock' or 'block'")
    block = blocks[i]
    lin = adapter.linears(block)
    attn = {n: m for n, m in lin.items() if n.startswith(adapter.attn + ".")}
    mlp = {n: m for n, m in lin.items() if n not in attn}
    mlp_owners = [block.get_submodule(adapter.mlp)] if adapter.mlp else list(mlp.values())
    return [Unit(f"block {i} attn→residual", [i], [block.get_submodule(adapter.attn)], attn, None,
                 _run_until(block, adapter.attn_out_norm)),
            Unit(f"block {i} mlp→residual", [i], mlp_owners, mlp, None, _run_blocks([block]))]


@torch.no_grad()
def capture_tap(
    block: nn.Module, batches: list[Batch], tap: Tap, device: torch.device, store: torch.device,
    *, inputs: bool, outputs: bool,
) -> tuple[list[UnitInput], list[torch.Tensor]]:
    """Run ``block`` on each batch and keep the input of ``tap.entry`` and/or the output of ``tap.exit``."""
    entry, exit_ = block.get_submodule(tap.entry), block.get_submodule(tap.exit)
    ins: list[UnitInput] = []
    outs: list[torch.Tensor] = []
    state: dict[str, bool] = {}

    def pre(_m: nn.Module, args: tuple, kwargs: dict) -> None:
        if inputs:
            if args:
                ins.append(UnitInput(args[0].to(store), to_device(args[1:], store), to_device(kwargs, store), None))
            else:
                key = "hidden_states" if "hidden_states" in kwargs else next(iter(kwargs))
                rest = {k: v for k, v in kwargs.items() if k != key}
                ins.append(UnitInput(kwargs[key].to(store), (), to_device(rest, store), key))
        state["in"] = True
        if not outputs:
            raise StopForward

    def post(_m: nn.Module, _args: tuple, out: Any) -> None:
        if outputs:
            outs.append(block_output(out).to(store))
        raise StopForward

    h1 = entry.register_forward_pre_hook(pre, with_kwargs=True)
    h2 = exit_.register_forward_hook(post)
    try:
        for b in batches:
            if forward_until_stop(block, b.hidden.to(device), *to_device(b.args, device), **to_device(b.kwargs, device)):
                continue
            raise RuntimeError(f"the block never called {tap.entry!r}/{tap.exit!r} in its forward")
    finally:
        h1.remove()
        h2.remove()
    return ins, outs


def block_inputs(batches: list[Batch]) -> list[UnitInput]:
    """Block inputs as unit inputs (for 'block' and 'blocks')."""
    return [UnitInput(b.hidden, b.args, b.kwargs, None) for b in batches]
