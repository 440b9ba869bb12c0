"""A model larger than memory: a skeleton on the meta device whose decoder blocks are read from the checkpoint's
safetensors shards one at a time (``load``), and given back (``release``) once their work is done.

Everything that is not a decoder block (embeddings, final norm, head, rotary buffers) is read once and stays; a
block costs memory only while it is loaded. Tensors are read one by one from the shards (safetensors reads only
the bytes of the tensor asked for), in the dtype asked for.
"""
from __future__ import annotations

from collections.abc import MutableMapping

import json
from pathlib import Path

import torch
from torch import nn

from .adapters import Adapter, get_adapter

INDEX = "model.safetensors.index.json"


class CheckpointReader:
    """The tensors of a Hugging Face safetensors checkpoint (one file, or shards with an index) by name."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        index = self.folder / INDEX
        if index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
            self.files = {name: self.folder / f for name, f in weight_map.items()}
        else:
            files = sorted(self.folder.glob("*.safetensors"))
            if len(files) != 1:
                raise ValueError(f"{folder}: streaming needs one model.safetensors or an index of shards "
                                 f"({INDEX}); found {len(files)} safetensors files")
            from safetensors import safe_open  # noqa: PLC0415

            with safe_open(str(files[0]), framework="pt") as f:
                self.files = {name: files[0] for name in f.keys()}
        self._open: dict[Path, object] = {}

    def names(self) -> list[str]:
        return list(self.files)

    def get(self, name: str) -> torch.Tensor:
        from safetensors import safe_open  # noqa: PLC0415

        path = self.files.get(name)
        if path is None:
            raise KeyError(name)
        handle = self._open.get(path)
        if handle is None:
            handle = self._open[path] = safe_open(str(path), framework="pt")
        return handle.get_tensor(name)

    def close(self) -> None:
        """Drop the open shards: their memory-mapped pages no longer count against this process."""
        self._open.clear()

    def shard_files(self) -> list[Path]:
        return sorted(set(self.files.values()))


def empty_model(config, dtype: torch.dtype) -> nn.Module:
    """The model of ``config`` with every parameter on the meta device (buffers such as rotary tables are real)."""
    from accelerate import init_empty_weights  # noqa: PLC0415
    from transformers import AutoModelForCausalLM  # noqa: PLC0415

    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.eval()
    return model


class StreamedModel:
    """A meta skeleton of the checkpoint in ``folder`` with its non-block tensors loaded; blocks on demand."""

    def __init__(self, folder: str | Path, config, dtype: torch.dtype):
        self.reader = CheckpointReader(folder)
        self.dtype = dtype
        self.model = empty_model(config, dtype)
        self.adapter: Adapter = get_adapter(self.model)
        self.load_non_blocks()
        self.loaded: set[int] = set()

    def _non_block_names(self) -> list[str]:
        prefix = self.adapter.blocks + "."
        names = [n for n, _ in list(self.model.named_parameters()) + list(self.model.named_buffers())]
        return [n for n in names if not n.startswith(prefix)]

    def load_non_blocks(self) -> None:
        """Read the tensors outside the decoder blocks (embeddings, final norm, head) that are not loaded."""
        params = dict(self.model.named_parameters(remove_duplicate=False))
        for name in self._non_block_names():
            t = params.get(name)
            if t is None or t.is_meta:
                self._set(self.model, name, name)
        if hasattr(self.model, "tie_weights"):
            self.model.tie_weights()
        self.reader.close()

    def drop_non_blocks(self) -> None:
        """Give back the parameters outside the blocks (the embeddings of a large vocabulary weigh more than a
        block): a walk needs them only to capture block 0's inputs; :meth:`load_non_blocks` reads them again."""
        from accelerate.utils import set_module_tensor_to_device  # noqa: PLC0415

        params = dict(self.model.named_parameters(remove_duplicate=False))
        for name in self._non_block_names():
            if name in params and not params[name].is_meta:
                set_module_tensor_to_device(self.model, name, "meta")
        _trim()

    def _set(self, root: nn.Module, name: str, key: str) -> None:
        from accelerate.utils import set_module_tensor_to_device  # noqa: PLC0415

        try:
            value = self.reader.get(key)
        except KeyError:
            tensor = dict(root.named_parameters()).get(name)
            if tensor is None or not tensor.is_meta:
                return  # a buffer the checkpoint does not hold (computed at init)
            tied = getattr(self.model.config, "tie_word_embeddings", False) and name.endswith("lm_head.weight")
            if tied:
                return  # filled by tie_weights
            raise ValueError(f"{self.reader.folder}: the checkpoint has no tensor {key}") from None
        set_module_tensor_to_device(root, name, "cpu", value=value, dtype=self.dtype if value.is_floating_point() else None)

    def block_prefix(self, i: int) -> str:
        return f"{self.adapter.blocks}.{i}."

    def load(self, i: int) -> nn.Module:
        """Block ``i`` with its checkpoint weights (on the CPU)."""
        block = self.adapter.get_blocks(self.model)[i]
        if i not in self.loaded:
            for name, t in list(block.named_parameters()) + list(block.named_buffers()):
                if t.is_meta:
                    self._set(block, name, self.block_prefix(i) + name)
            self.reader.close()
            for name, mod in self.adapter.linears(block).items():
                if not torch.isfinite(mod.weight).all():
                    raise ValueError(f"weight of {self.block_prefix(i)}{name} contains NaN or Inf")
            self.loaded.add(i)
        return block

    def release(self, i: int) -> None:
        """Give block ``i``'s memory back (its parameters return to the meta device; buffers stay)."""
        from accelerate.utils import set_module_tensor_to_device  # noqa: PLC0415

        if i in self.loaded:
            block = self.adapter.get_blocks(self.model)[i]
            for name, _ in list(block.named_parameters()):
                set_module_tensor_to_device(block, name, "meta")
            self.loaded.discard(i)
            _trim()

    def non_block_state(self) -> dict[str, torch.Tensor]:
        """The tensors outside the decoder blocks, by their state-dict names (tied copies once)."""
        self.load_non_blocks()
        prefix = self.adapter.blocks + "."
        return {k: v for k, v in self.model.state_dict().items() if not k.startswith(prefix) and not v.is_meta}


def _trim() -> None:
    """Hand freed heap memory back to the system (glibc keeps it otherwise, and a streamed run's RSS would creep up
    block by block)."""
    try:
        import ctypes  # noqa: PLC0415

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PackedMask:
    """One mask as its packed bytes and shape (what maskopt.io.save_masks writes)."""

    def __init__(self, packed: torch.Tensor, shape: tuple[int, ...]):
        self.packed, self.shape = packed, shape


class PackedMasks(MutableMapping):
    """Masks kept bit-packed in memory (8 per byte): a run holds every layer's mask without a byte per weight.
    A mapping of name → bool tensor: reads unpack the one mask asked for, so ``dict(masks)`` and ``masks.items()``
    give plain bool masks; ``packed_items`` gives the stored bytes."""

    def __init__(self, other=(), **kw) -> None:
        self._data: dict[str, tuple[torch.Tensor, tuple[int, ...]]] = {}
        self.update(other, **kw)

    def __setitem__(self, name: str, mask: torch.Tensor) -> None:
        from ..io import pack_bits  # noqa: PLC0415

        if mask.dtype != torch.bool:
            raise TypeError(f"mask {name!r} must be a bool tensor, got {mask.dtype}")
        self._data[name] = (pack_bits(mask), tuple(mask.shape))

    def __getitem__(self, name: str) -> torch.Tensor:
        from ..io import unpack_bits  # noqa: PLC0415

        packed, shape = self._data[name]
        return unpack_bits(packed, shape)

    def __delitem__(self, name: str) -> None:
        del self._data[name]

    def __iter__(self):
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"PackedMasks({len(self)} masks)"

    def packed_items(self):
        """(name, PackedMask) pairs: the bytes as stored, for writers that keep them packed (maskopt.io.save_masks)."""
        return ((k, PackedMask(*v)) for k, v in self._data.items())

    def update(self, other=(), **kw) -> None:
        if isinstance(other, PackedMasks):  # copied packed, never unpacked
            self._data.update(other._data)
            other = ()
        for k, v in dict(other, **kw).items():
            self[k] = v

    def copy(self) -> "PackedMasks":
        return PackedMasks(self)
