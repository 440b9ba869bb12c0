"""compressed-tensors: the package's sparse-bitmask and sparse-24-bitmask layouts, written by the package.

``layout='bitmask'`` stores every sparse linear as (values of the non-zeros, a packed bitmask of
rows × ⌈d/8⌉ bytes, int64 row offsets); ``layout='2:4'`` (sparse-24-bitmask) stores rows × d/2
values and the bitmask, for weights where every block of 4 consecutive inputs has at most 2 non-zeros
(refused otherwise: the package would silently prune them to 2:4). ``auto`` picks 2:4 when every
sparse linear fits it. Written with ``ModelCompressor.compress`` + ``update_config``; the folder loads
with ``ModelCompressor.from_pretrained(dir).decompress(dir, model)`` (llm-compressor / vLLM readers).
compressed-tensors is pinned to 0.13: later releases dropped these sparse compressors.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .errors import ExportFormatError, MaskFitError
from .files import sha256_file
from .registry import ExportFormat, register_format
from .weights import dense_state, sparse_linears

WEIGHTS = "model.safetensors"
LAYOUTS = ("auto", "bitmask", "2:4")


def fits_24(W: torch.Tensor) -> bool:
    """At most 2 non-zeros in every block of 4 consecutive inputs of a row."""
    return W.shape[-1] % 4 == 0 and bool(((W != 0).reshape(W.shape[0], -1, 4).sum(-1) <= 2).all())


def _import():
    try:
        from compressed_tensors.compressors import ModelCompressor
        from compressed_tensors.config import BitmaskConfig, Sparse24BitMaskConfig
    except ImportError as e:  # pragma: no cover - depends on the installed version
        raise ImportError("format 'compressed-tensors' needs compressed-tensors 0.13 (the last release with the "
                          f"sparse-bitmask compressors): pip install 'compressed-tensors==0.13.*' ({e})") from None
    return ModelCompressor, BitmaskConfig, Sparse24BitMaskConfig


@register_format("compressed-tensors")
class CompressedTensorsFormat(ExportFormat):
    def save(self, model, out: Path, *, layout: str = "auto", min_sparsity: float = 0.1) -> dict[str, Any]:
        from safetensors.torch import save_file

        ModelCompressor, BitmaskConfig, Sparse24BitMaskConfig = _import()
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        sparse = sparse_linears(model, min_sparsity)
        if not sparse:
            raise MaskFitError(f"no linear layer has ≥ {min_sparsity:.0%} zeros: nothing to compress")
        all_24 = all(fits_24(W) for W in sparse.values())
        if layout == "2:4" and not all_24:
            bad = next(n for n, W in sparse.items() if not fits_24(W))
            raise MaskFitError(f"layer {bad} is not 2:4 sparse (a block of 4 inputs keeps more than 2); "
                               "use layout=bitmask or prune with --pattern 2:4")
        use_24 = layout == "2:4" or (layout == "auto" and all_24)
        zeros = sum(int((W == 0).sum()) for W in sparse.values())
        total = sum(W.numel() for W in sparse.values())
        ignore = sorted(n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n not in sparse)
        kw = dict(targets=["Linear"], ignore=ignore, global_sparsity=zeros / total)
        cfg = (Sparse24BitMaskConfig(sparsity_structure="2:4", **kw) if use_24
               else BitmaskConfig(sparsity_structure="unstructured", **kw))
        compressor = ModelCompressor(sparsity_config=cfg)
        state = compressor.compress(model, state_dict=dense_state(model))
        save_file({k: v.contiguous() for k, v in state.items()}, str(out / WEIGHTS), metadata={"format": "pt"})
        model.config.save_pretrained(out)
        compressor.update_config(str(out))
        names = set(sparse)
        index = sum(v.numel() * v.element_size() for k, v in state.items()
                    if k.rsplit(".", 1)[0] in names and not k.endswith(".compressed"))
        values = sum(v.numel() * v.element_size() for k, v in state.items()
                     if k.rsplit(".", 1)[0] in names and k.endswith(".compressed"))
        return {"layout": "2:4" if use_24 else "bitmask", "sha256": {WEIGHTS: sha256_file(out / WEIGHTS)},
                "index_bytes": index, "value_bytes": values, "kept": total - zeros, "weights": total,
                "options": {"layout": layout, "min_sparsity": min_sparsity}}

    def load_state(self, path: Path, info: dict[str, Any]) -> dict[str, torch.Tensor]:
        ModelCompressor, _, _ = _import()
        try:
            compressor = ModelCompressor.from_pretrained(str(path))
            if compressor is None or compressor.sparsity_compressor is None:
                raise ExportFormatError(f"{path}: config.json has no compressed-tensors sparsity config")
            return dict(compressor.sparsity_compressor.decompress(str(path)))
        except ExportFormatError:
            raise
        except Exception as e:  # noqa: BLE001 - safetensors / torch errors of a damaged file
            raise ExportFormatError(f"{path}: cannot decompress the compressed-tensors checkpoint ({type(e).__name__}: "
                                    f"{e}); it is truncated, corrupted or inconsistent") from None
