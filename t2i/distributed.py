"""Rank handling in one place: torchrun initialisation, gathering and averaging across ranks.

In a plain process every function is a no-op (rank 0 of a world of 1), so single-process code
calls them unconditionally.
"""

from __future__ import annotations

import os

import torch


def init(device: str) -> tuple[int, int, str]:
    """(rank, world size, device) under torchrun (nccl on CUDA, gloo on CPU); (0, 1, device) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, device
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    if device == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    return dist.get_rank(), world, device


def world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_gather_object(obj) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` in a plain process)."""
    if world_size() == 1:
        return [obj]
    import torch.distributed as dist

    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_mean(tensors: list[torch.Tensor | None]) -> None:
    """Average ``tensors`` across ranks in place, in one flat all-reduce (None entries skipped)."""
    world = world_size()
    tensors = [t for t in tensors if t is not None]
    if world == 1 or not tensors:
        return
    import torch.distributed as dist

    flat = torch.cat([t.reshape(-1) for t in tensors])  # one message instead of one per tensor
    dist.all_reduce(flat)
    flat.div_(world)
    offset = 0
    for t in tensors:
        t.copy_(flat[offset:offset + t.numel()].view_as(t))
        offset += t.numel()
