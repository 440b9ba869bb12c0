"""Rows of a layer are independent problems: shard them over processes or GPUs (torchrun).

    torchrun --nproc_per_node 4 -m maskopt prune MODEL --method sparseswaps ...

Every rank walks the blocks (the forward passes are cheap next to the solves); for per-row and N:M
patterns each rank solves a contiguous share of every layer's rows, and the masks (and updated weights)
are gathered so that every rank applies the same result. Rank 0 alone writes outputs and checkpoints.
Backend: NCCL on CUDA, gloo on CPU. Results equal the single-process run's row for row.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init_from_env() -> bool:
    """Join the process group that torchrun describes in the environment (no-op for a single process)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return dist.is_initialized()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend)
    return True


def world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def local_device(device: torch.device) -> torch.device:
    """Each rank's own GPU when running on CUDA under torchrun."""
    if device.type == "cuda" and dist.is_initialized() and device.index is None:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def row_shard(rows: int, r: int | None = None, n: int | None = None) -> slice:
    """The contiguous rows of rank ``r`` of ``n``: sizes differ by at most one, ranks in order."""
    r = rank() if r is None else r
    n = world() if n is None else n
    base, extra = divmod(rows, n)
    start = r * base + min(r, extra)
    return slice(start, start + base + (1 if r < extra else 0))


def gather_rows(part: torch.Tensor, rows: int) -> torch.Tensor:
    """Concatenate every rank's ``part`` (its row shard) into the full (rows × …) tensor on every rank."""
    n = world()
    if n == 1:
        return part
    sizes = [row_shard(rows, r, n).stop - row_shard(rows, r, n).start for r in range(n)]
    width = max(sizes)
    dev = part.device if dist.get_backend() == "nccl" else torch.device("cpu")
    dtype = torch.uint8 if part.dtype == torch.bool else part.dtype
    padded = torch.zeros((width, *part.shape[1:]), dtype=dtype, device=dev)
    padded[: part.shape[0]] = part.to(dev, dtype)
    bufs = [torch.empty_like(padded) for _ in range(n)]
    dist.all_gather(bufs, padded)
    full = torch.cat([b[:s] for b, s in zip(bufs, sizes)])
    return full.to(part.device, part.dtype)


def all_values(x: int) -> list[int]:
    """Every rank's ``x``, in rank order (a record of who did what)."""
    if world() == 1:
        return [int(x)]
    t = torch.tensor([int(x)], dtype=torch.long)
    bufs = [torch.empty_like(t) for _ in range(world())]
    dist.all_gather(bufs, t)
    return [int(b) for b in bufs]


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()
