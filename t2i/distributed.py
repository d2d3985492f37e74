"""Rank handling in one place: torchrun initialisation, gathering and averaging across ranks,
and BatchNorm over the global batch (``train.sync_bn``).

In a plain process every function is a no-op (rank 0 of a world of 1), so single-process code
calls them unconditionally.
"""

from __future__ import annotations

import atexit
import itertools
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
        # Torn down while the interpreter is still whole: left to exit, gloo's threads can abort
        # the process (SIGABRT, "terminate called without an active exception") after a good run.
        atexit.register(dist.destroy_process_group)
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


class _AllReduceSum(torch.autograd.Function):
    """The sum of ``x`` over ranks, differentiable: each rank's sum feeds every rank's loss, so
    the gradient of ``x`` is the sum of the ranks' output gradients."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return _summed(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return _summed(grad)


def _summed(x: torch.Tensor) -> torch.Tensor:
    import torch.distributed as dist

    x = x.clone()
    dist.all_reduce(x)
    return x


class SyncBatchNorm(torch.nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the global batch, across all ranks.

    Each training call all-reduces the per-channel sum, sum of squares and count, through
    autograd (the gradient flows back through the shared statistics); eval mode and a plain
    process are ordinary BatchNorm. Unlike ``torch.nn.SyncBatchNorm`` (CUDA only), it runs on
    gloo (CPU) and nccl alike. Same parameters and buffers as the BatchNorm it replaces, so
    state dicts load either way.
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input, got {x.dim()}D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or world_size() == 1:
            return super().forward(x)
        C, dims = x.size(1), [0, *range(2, x.dim())]
        xf = x.float()
        count = torch.full((1,), x.numel() / C, device=x.device)
        stats = _AllReduceSum.apply(torch.cat([xf.sum(dims), (xf * xf).sum(dims), count]))  # (2C + 1,) global sums
        n = stats[-1]
        mean = stats[:C] / n
        var = (stats[C:2 * C] / n - mean * mean).clamp_min(0)  # biased, as BatchNorm normalises with
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), m)
                self.running_var.lerp_((var * n / (n - 1)).to(self.running_var.dtype), m)  # unbiased
        shape = [1, C] + [1] * (x.dim() - 2)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def sync_batchnorm(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` with every BatchNorm1d / BatchNorm2d replaced by ``SyncBatchNorm`` (same state)."""
    for name, child in module.named_children():
        if isinstance(child, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            ref = next(itertools.chain(child.parameters(), child.buffers()), None)
            sync = SyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            sync.load_state_dict(child.state_dict())
            sync = sync.to(ref.device) if ref is not None else sync
            sync.train(child.training)
            setattr(module, name, sync)
        else:
            sync_batchnorm(child)
    return module
