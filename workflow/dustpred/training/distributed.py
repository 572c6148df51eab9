"""Data-parallel plumbing of U-Net training: the process group, rank-aware BatchNorm, sums.

:func:`init_distributed` joins the process group that ``torch.distributed.run`` set up (NCCL
on GPUs, gloo on CPUs) and picks the rank's device. :class:`GenericSyncBatchNorm` computes
BatchNorm statistics over all ranks with any backend (``torch.nn.SyncBatchNorm`` needs GPUs),
so that a run on N processes computes the function of one process holding the whole batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from dustpred.errors import ConfigError


@dataclass
class DistInfo:
    """This process's place in the group: ``rank`` of ``world`` processes, GPU ``local_rank``."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def init_distributed(device_pref: str, cuda_graphs: str = "auto") -> tuple[DistInfo, torch.device]:
    """Join the process group that torchrun set up (if any) and pick this rank's device.

    ``device_pref`` is ``unet.device`` (auto|cpu|cuda), ``cuda_graphs`` ``unet.cuda_graphs``
    (auto|true|false).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = device_pref == "cuda" or (device_pref == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise ConfigError("config key 'unet.device': 'cuda' requested but no GPU is visible")
    if world <= 1:
        return DistInfo(), torch.device("cuda" if use_cuda else "cpu")
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if use_cuda:
        torch.cuda.set_device(info.local_rank)
        device = torch.device("cuda", info.local_rank)
    else:
        device = torch.device("cpu")
    if use_cuda and cuda_graphs == "true":
        # Capturing NCCL all-reduces in a CUDA graph needs NCCL's watchdog error handling off
        # (PyTorch's CUDA-graph notes); it must be set before the process group exists.
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "0")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return info, device


class _AllReduceSum(torch.autograd.Function):
    """Differentiable sum over ranks: the gradient of a sum is the sum of the gradients."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = x.clone()
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        g = grad.clone()
        dist.all_reduce(g)
        return g


class GenericSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose batch statistics span all ranks, for any backend (gloo on CPU too).

    ``torch.nn.SyncBatchNorm`` runs on GPUs only; this one sums the statistics over ranks
    with a differentiable all-reduce, so gradients flow through the global statistics exactly
    as in one process holding the whole batch (DDP then averages the per-rank gradients).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        all_reduce = _AllReduceSum.apply
        c = x.shape[1]
        count = torch.full((1,), x.numel() / c, dtype=x.dtype, device=x.device)
        s = all_reduce(torch.cat([x.sum(dim=(0, 2, 3)), count]))
        n = s[-1]
        mean = s[:-1] / n
        d = x - mean.view(1, c, 1, 1)
        var = all_reduce((d * d).sum(dim=(0, 2, 3))) / n
        if self.track_running_stats:
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 0.1
                self.running_mean.mul_(1 - m).add_(m * mean.detach())
                self.running_var.mul_(1 - m).add_(m * var.detach() * n / (n - 1))
                self.num_batches_tracked.add_(1)
        y = d * torch.rsqrt(var + self.eps).view(1, c, 1, 1)
        if self.affine:
            y = y * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)
        return y


def convert_generic_sync_bn(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d in ``module`` by a :class:`GenericSyncBatchNorm` (in place,
    keeping the same parameter and buffer tensors, so state dicts are unchanged)."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            new = GenericSyncBatchNorm(
                child.num_features,
                child.eps,
                child.momentum,
                child.affine,
                child.track_running_stats,
            )
            new.weight, new.bias = child.weight, child.bias
            new.running_mean, new.running_var = child.running_mean, child.running_var
            new.num_batches_tracked = child.num_batches_tracked
            setattr(module, name, new)
        else:
            convert_generic_sync_bn(child)
    return module


def all_reduce_to_cpu(
    t: torch.Tensor, info: DistInfo, device: torch.device, op: str = "sum"
) -> torch.Tensor:
    """``t`` summed (``op="sum"``) or maximised (``"max"``) over ranks, on the CPU; ``t``
    itself in one process. The reduction runs on ``device`` on GPUs (NCCL), else on the CPU."""
    if not info.active:
        return t
    backend_dev = device if device.type == "cuda" else torch.device("cpu")
    t = t.to(backend_dev)
    dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return t.cpu()
