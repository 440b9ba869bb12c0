"""The block walker: capture the inputs of block 0, then walk the decoder blocks in order.

Every pass over a model goes through :class:`BlockWalker` — pruning, certification and
reconstruction alike. It carries one activation stream (the model being changed) or two (that
model and a dense reference, for reconstruction targets; or the model's own unchanged blocks run
before the caller changes them, the "twin" stream), lets the caller change the current
block(s), then runs the changed block(s) to produce the next inputs. Only the current block needs
to live on the compute device; the keyword arguments blocks need (attention mask, position ids /
rotary embeddings) are captured from the model's own forward, never re-derived. G = Σ x xᵀ for
every group of linears that share an input is accumulated by :func:`collect_grams`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

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


class StopForward(Exception):
    """Raised by a capture hook once the forward has produced what was needed: the rest is skipped."""


def forward_until_stop(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> bool:
    """Call ``fn`` (a forward); True when a capture hook stopped it with StopForward, False when it ran through."""
    try:
        fn(*args, **kwargs)
    except StopForward:
        return True
    return False


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


def to_device(x: Any, device: torch.device | str) -> Any:
    """Every tensor inside ``x`` on ``device``."""
    return map_tensors(lambda t: t.to(device), x)


def block_output(out: Any) -> torch.Tensor:
    """The hidden states of a block's (or sub-module's) output, whatever tuple it returns."""
    return out[0] if isinstance(out, (tuple, list)) else out


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
        captured.append(Batch(hidden.to(store_device), to_device(args[1:], store_device),
                              to_device(kwargs, store_device)))
        raise StopForward

    handle = blocks[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for i in range(0, windows.shape[0], batch_size):
            forward_until_stop(model, input_ids=windows[i : i + batch_size].to(device), use_cache=False)
    finally:
        handle.remove()
    return captured


@torch.no_grad()
def run_block(block: nn.Module, batches: list[Batch], device: torch.device) -> list[Batch]:
    """The block's outputs as the next block's inputs (same extra arguments)."""
    outs = []
    for b in batches:
        h = block_output(block(b.hidden.to(device), *to_device(b.args, device), **to_device(b.kwargs, device)))
        outs.append(Batch(h.to(b.hidden.device), b.args, b.kwargs))
    return outs


def add_product(acc: dict[str, torch.Tensor], name: str, left: torch.Tensor, right: torch.Tensor) -> None:
    """acc[name] += leftᵀ right (tokens × d each), kept in float64: added to the float64 sum element by element, so
    no d × d float64 temporary."""
    if name in acc:
        acc[name].add_(left.T @ right)
    else:
        acc[name] = (left.T @ right).to(torch.float64)


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
            add_product(self.grams, name, x, x)
            self.tokens[name] = self.tokens.get(name, 0) + x.shape[0]

        return hook

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


@torch.no_grad()
def collect_grams(block: nn.Module, adapter: Adapter, batches: list[Batch], device: torch.device) -> dict[str, torch.Tensor]:
    """G for the first layer of every shared-input group (one forward of the block); every layer of a
    group maps to the same tensor object."""
    firsts = {group[0]: block.get_submodule(group[0]) for group in adapter.linear_groups}
    collector = GramCollector(firsts)
    try:
        run_block(block, batches, device)
    finally:
        collector.remove()
    return {name: collector.grams[group[0]] for group in adapter.linear_groups for name in group}


@torch.no_grad()
def collect_cross_grams(block: nn.Module, adapter: Adapter, batches: list[Batch], dense_batches: list[Batch],
                        device: torch.device) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], list[Batch]]:
    """G = X_p X_pᵀ and C = X_d X_pᵀ (float64) for every shared-input group, X_p the group's inputs when the
    block runs on ``batches`` (the pruned stream), X_d on ``dense_batches`` (the dense stream), token by token;
    and the block's outputs on ``dense_batches`` (the dense stream's next inputs, as ``run_block``'s).

    Batch by batch: one forward on the dense batch keeps each group's input, the forward on the pruned batch
    then adds x_pᵀ x_p and x_dᵀ x_p. Every layer of a group maps to the same two tensors."""
    if len(batches) != len(dense_batches):
        raise ValueError(f"{len(batches)} pruned batches but {len(dense_batches)} dense ones")
    firsts = {group[0]: block.get_submodule(group[0]) for group in adapter.linear_groups}
    kept: dict[str, torch.Tensor] = {}
    grams: dict[str, torch.Tensor] = {}
    cross: dict[str, torch.Tensor] = {}
    phase = ["dense"]

    def hook(name: str) -> Callable:
        def fn(_module: nn.Module, args: tuple) -> None:
            x = args[0].detach()
            x = x.reshape(-1, x.shape[-1]).to(torch.float32)
            if phase[0] == "dense":
                kept[name] = x
                return
            xd = kept.pop(name)
            if xd.shape != x.shape:
                raise ValueError(f"{name}: dense and pruned inputs differ in shape ({tuple(xd.shape)} vs {tuple(x.shape)})")
            add_product(grams, name, x, x)
            add_product(cross, name, xd, x)
        return fn

    handles = [m.register_forward_pre_hook(hook(name)) for name, m in firsts.items()]
    dense_out: list[Batch] = []
    try:
        for b, bd in zip(batches, dense_batches):
            phase[0] = "dense"
            dense_out += run_block(block, [bd], device)
            phase[0] = "pruned"
            run_block(block, [b], device)
    finally:
        for h in handles:
            h.remove()
    return ({name: grams[group[0]] for group in adapter.linear_groups for name in group},
            {name: cross[group[0]] for group in adapter.linear_groups for name in group}, dense_out)


def move_non_blocks(model: nn.Module, adapter: Adapter, device: torch.device) -> None:
    """Put everything except the decoder blocks on ``device`` (embeddings, rotary, final norm)."""
    prefix = adapter.blocks + "."
    for name, mod in model.named_modules():
        if name == adapter.blocks or name.startswith(prefix):
            continue
        mod._apply(lambda t: t.to(device), recurse=False)
    if hasattr(model, "tie_weights"):
        model.tie_weights()


@dataclass
class BlockStep:
    """What the walker hands out for one step: the block indices, the model's blocks (on the device), the
    inputs of the first of them, and, when a dense reference is walked along, its blocks and inputs."""

    indices: list[int]
    blocks: list[nn.Module]
    inputs: list[Batch]
    dense_blocks: list[nn.Module] | None = None
    dense_inputs: list[Batch] | None = None
    twin_outputs: list[Batch] | None = None  # twin_by_caller: the unchanged blocks' outputs on dense_inputs, set by the caller

    @property
    def index(self) -> int:
        return self.indices[0]

    @property
    def block(self) -> nn.Module:
        return self.blocks[0]

    @property
    def dense_block(self) -> nn.Module | None:
        return self.dense_blocks[0] if self.dense_blocks else None


class BlockWalker:
    """Sequential pass over the decoder blocks, ``stride`` blocks per step.

    Iterating yields a :class:`BlockStep`; the caller may change the step's blocks in place; when the
    caller asks for the next step, the walker runs the (changed) blocks on the inputs to produce the
    next inputs, checks them for NaN/Inf and calls ``on_step_done(step, next_inputs, next_dense_inputs)``
    (used for checkpoints). With ``dense_model``, the dense blocks of the same indices come along
    (``dense_stream=True`` also carries the dense model's own activations). ``twin=True`` carries the
    activations of the model as it was before the walk, without a copy of it: each step's blocks run on the
    twin inputs before the caller may change them (``step.dense_inputs``); with ``twin_by_caller=True`` the
    caller runs them instead (it already does, e.g. ``collect_cross_grams``) and must set ``step.twin_outputs``
    before asking for the next step, which saves one forward of the block. ``start`` / ``resume_hidden``
    / ``resume_dense_hidden`` restart the walk at a later block from saved hidden states.
    """

    def __init__(
        self, model: nn.Module, adapter: Adapter, windows: torch.Tensor, *, device: torch.device | str = "cpu",
        batch_size: int = 8, offload: bool = True, dense_model: nn.Module | None = None,
        dense_stream: bool = False, twin: bool = False, twin_by_caller: bool = False, stride: int = 1, start: int = 0,
        resume_hidden: Sequence[torch.Tensor] | None = None,
        resume_dense_hidden: Sequence[torch.Tensor] | None = None, desc: str = "blocks", progress: bool = True,
        on_step_done: Callable[[BlockStep, list[Batch], list[Batch] | None], None] | None = None,
        source=None, dense_source=None,
    ):
        if stride < 1:
            raise ValueError(f"stride must be ≥ 1, got {stride}")
        if dense_stream and dense_model is None:
            raise ValueError("a dense stream needs the dense model")
        if twin and dense_model is not None:
            raise ValueError("the twin stream is the model's own: give no dense model with it")
        if twin_by_caller and not twin:
            raise ValueError("twin_by_caller needs twin=True")
        self.twin, self.twin_by_caller = twin, twin_by_caller
        self.model, self.adapter, self.windows = model, adapter, windows
        self.device = torch.device(device)
        self.batch_size, self.stride, self.start = batch_size, stride, start
        self.offload = offload and self.device.type != "cpu"
        self.dense_model, self.dense_stream = dense_model, dense_stream
        self.resume_hidden, self.resume_dense_hidden = resume_hidden, resume_dense_hidden
        self.desc, self.progress, self.on_step_done = desc, progress, on_step_done
        self.source = source  # a StreamedModel: blocks are read before their step and given back after it
        self.dense_source = dense_source if dense_model is not None else None  # the same for the dense reference
        if dense_model is not None and dense_source is not None and dense_model is not dense_source.model:
            raise ValueError("the dense source streams another model than the dense model given")
        if source is not None or self.dense_source is not None:
            self.offload = True  # never move a whole (meta) model: blocks are placed one step at a time
        self.n_blocks = len(adapter.get_blocks(model))
        if dense_model is not None and len(adapter.get_blocks(dense_model)) != self.n_blocks:
            raise ValueError(f"the model has {self.n_blocks} blocks, the dense model "
                             f"{len(adapter.get_blocks(dense_model))}")

    bar = None

    def status(self, text: str) -> None:
        """Show ``text`` beside the progress bar (the layer being solved, its time)."""
        if self.bar is not None and self.progress:
            self.bar.set_postfix_str(text, refresh=True)

    def _models(self) -> list[nn.Module]:
        return [self.model] + ([self.dense_model] if self.dense_model is not None else [])

    def _inputs(self, model: nn.Module, hidden: Sequence[torch.Tensor] | None) -> list[Batch]:
        store = "cpu" if self.offload else self.device
        source = self.source if model is self.model else self.dense_source
        if source is not None:
            source.load_non_blocks()
            move_non_blocks(model, self.adapter, self.device)
        batches = capture_block_inputs(model, self.adapter, self.windows, self.device, self.batch_size, store)
        if source is not None:
            source.drop_non_blocks()  # the blocks run on the captured inputs: the embeddings are not needed again
        if not batches:
            raise ValueError("no calibration inputs were captured (empty calibration data)")
        return _with_hidden(batches, hidden, "saved block inputs") if hidden is not None else batches

    def _place(self, blocks: list[nn.Module], device: torch.device | str) -> None:
        for b in blocks:
            b.to(device)

    def __iter__(self) -> Iterator[BlockStep]:
        for m in self._models():
            if self.offload:
                if (self.source if m is self.model else self.dense_source) is None:  # a stream places its own
                    move_non_blocks(m, self.adapter, self.device)
            else:
                m.to(self.device)
        blocks = self.adapter.get_blocks(self.model)
        dblocks = self.adapter.get_blocks(self.dense_model) if self.dense_model is not None else None
        try:
            inputs = self._inputs(self.model, self.resume_hidden if self.start else None)
            dense_inputs = (self._inputs(self.dense_model, self.resume_dense_hidden if self.start else None)
                            if self.dense_stream else None)
            if self.twin:  # the same capture: block 0's inputs are those of the unchanged model
                dense_inputs = _with_hidden(inputs, self.resume_dense_hidden if self.start else
                                            [b.hidden.clone() for b in inputs], "saved twin-stream inputs")
            starts = range(self.start, self.n_blocks, self.stride)
            self.bar = tqdm(starts, desc=self.desc, disable=not self.progress, initial=0, unit="block")
            for s in self.bar:
                idx = list(range(s, min(s + self.stride, self.n_blocks)))
                for src in (self.source, self.dense_source):
                    for i in idx if src is not None else ():
                        src.load(i)
                step = BlockStep(idx, [blocks[i] for i in idx], inputs,
                                 [dblocks[i] for i in idx] if dblocks is not None else None, dense_inputs)
                self._place(step.blocks + (step.dense_blocks or []), self.device)
                twin_next = None
                if self.twin and not self.twin_by_caller:  # before the caller changes the blocks
                    twin_next = dense_inputs
                    for b in step.blocks:
                        twin_next = run_block(b, twin_next, self.device)
                yield step
                if self.twin_by_caller:
                    twin_next = step.twin_outputs
                    if twin_next is None or len(twin_next) != len(dense_inputs):
                        raise RuntimeError(f"block {idx[0]}: twin_by_caller, but the step's twin_outputs were not set "
                                           "(the unchanged blocks' outputs on step.dense_inputs)")
                for b in step.blocks:
                    inputs = run_block(b, inputs, self.device)
                if not all(torch.isfinite(b.hidden).all() for b in inputs):
                    raise FloatingPointError(f"block {idx[-1]} produced NaN/Inf activations")
                if twin_next is not None:
                    dense_inputs = twin_next
                elif dense_inputs is not None:
                    for b in step.dense_blocks or []:
                        dense_inputs = run_block(b, dense_inputs, self.device)
                if self.offload:
                    self._place(step.blocks + (step.dense_blocks or []), "cpu")
                if self.on_step_done is not None:
                    self.on_step_done(step, inputs, dense_inputs)
                for src in (self.source, self.dense_source):
                    for i in idx if src is not None else ():
                        src.release(i)
        finally:
            if self.offload:
                for m in self._models():
                    if (m is self.model and self.source is not None) or (m is self.dense_model and self.dense_source):
                        continue  # a skeleton: its blocks went back to the meta device
                    m.to("cpu")
                    if hasattr(m, "tie_weights"):
                        m.tie_weights()


def _with_hidden(batches: list[Batch], hidden: Sequence[torch.Tensor] | None, what: str) -> list[Batch]:
    """``batches`` with their hidden states replaced by ``hidden`` (same extra arguments), checked to fit."""
    if hidden is None or len(hidden) != len(batches) or any(h.shape != b.hidden.shape for h, b in zip(hidden, batches)):
        raise ValueError(f"{what} do not match the calibration batches")
    return [Batch(h.to(b.hidden.device, b.hidden.dtype), b.args, b.kwargs) for h, b in zip(hidden, batches)]


def walk_blocks(
    model: nn.Module, adapter: Adapter, windows: torch.Tensor, step: Callable[[int, nn.Module, list[Batch]], None],
    *, device: torch.device | str = "cpu", batch_size: int = 8, offload: bool = True, desc: str = "blocks",
    progress: bool = True,
) -> None:
    """One stream, one block per step: ``step(index, block, inputs)`` may change the block in place."""
    for s in BlockWalker(model, adapter, windows, device=device, batch_size=batch_size, offload=offload, desc=desc,
                         progress=progress):
        step(s.index, s.block, s.inputs)


@torch.no_grad()
def dense_layer_data(
    model: nn.Module, adapter: Adapter, windows: torch.Tensor, blocks: Sequence[int], *,
    device: torch.device | str = "cpu", batch_size: int = 8, progress: bool = False,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{layer name: (W, G)} (float64, W as rows × d) of every prunable linear of ``blocks`` of an unchanged
    model: G from the dense model's own activations (benchmarks and studies of single layers)."""
    wanted = set(blocks)
    out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for step in BlockWalker(model, adapter, windows, device=device, batch_size=batch_size, progress=progress,
                            desc="collecting Grams"):
        if step.index in wanted:
            grams = collect_grams(step.block, adapter, step.inputs, torch.device(device))
            for name, mod in adapter.linears(step.block).items():
                out[adapter.layer_name(step.index, name)] = (adapter.get_weight(mod).to(torch.float64).cpu().clone(),
                                                             grams[name].cpu())
            wanted.discard(step.index)
        if not wanted:
            break
    return out
