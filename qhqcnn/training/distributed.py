"""Data-parallel training with PyTorch's own engine: ``torch.distributed`` + DDP.

``torchrun --nproc-per-node N -m qhqcnn train ...`` (or multi-node through torchrun's rendezvous)
sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``; :func:`init_distributed` then joins
the process group (gloo on CPU, nccl on CUDA). Without those variables everything here is a
no-op and training is the ordinary single-process run.

BatchNorm: by default each rank normalises with its own share of the batch (PyTorch's DDP
default: no extra communication). With ``sync_batchnorm`` (``--sync-batchnorm``) the statistics
are those of the whole global batch: ``nn.SyncBatchNorm`` on CUDA and, since PyTorch's
SyncBatchNorm refuses CPU tensors, :class:`AllReduceBatchNorm` on CPU (a differentiable
all-reduce). An N-rank run then computes the same updates as the single-process run with the
same global batch (up to float summation order), at the cost of one collective per BatchNorm
layer per pass.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from qhqcnn.config import DEVICES
from qhqcnn.errors import ConfigError


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: rank ``rank`` of ``world_size`` (1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes checkpoints, logs and results."""
        return self.rank == 0

    def describe(self) -> dict[str, Any]:
        return {"world_size": self.world_size, "backend": self.backend}


SINGLE_PROCESS = DistributedContext()


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device: torch.device) -> DistributedContext:
    """Join the process group torchrun describes (gloo on CPU, nccl on CUDA), or stay single."""
    if not launched_by_torchrun():
        return SINGLE_PROCESS
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))
    return DistributedContext(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        backend=backend,
    )


def current_context() -> DistributedContext:
    """The context of the process group this process has joined (single process if none)."""
    if not (dist.is_available() and dist.is_initialized()):
        return SINGLE_PROCESS
    return DistributedContext(
        rank=dist.get_rank(), world_size=dist.get_world_size(), backend=dist.get_backend()
    )


def shutdown(context: DistributedContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(context: DistributedContext) -> None:
    if context.enabled:
        dist.barrier()


def gather_rows(tensor: torch.Tensor, context: DistributedContext) -> torch.Tensor:
    """Concatenate every rank's rows in rank order (CPU result; any first-dimension sizes)."""
    if not context.enabled:
        return tensor
    parts: list[Any] = [None] * context.world_size
    dist.all_gather_object(parts, tensor.detach().cpu())
    return torch.cat(parts)


def shard(n: int, context: DistributedContext) -> slice:
    """This rank's contiguous share of ``n`` items (evaluation splits)."""
    per_rank = -(-n // context.world_size)
    start = min(n, context.rank * per_rank)
    return slice(start, min(n, start + per_rank))


class _SumAcrossRanks(torch.autograd.Function):
    """Differentiable all-reduce (sum): the gradient of a sum over ranks is the sum of the
    ranks' gradients."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # noqa: ARG004
        out = tensor.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: ARG004
        out = grad.clone()
        dist.all_reduce(out)
        return out


def sum_across_ranks(tensor: torch.Tensor) -> torch.Tensor:
    return _SumAcrossRanks.apply(tensor)


class AllReduceBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over the global batch of all ranks, for CPU (gloo) process groups.

    Training: per-channel sums and sums of squares of the local batch are summed across ranks
    with a differentiable all-reduce (:func:`sum_across_ranks`), then normalised and the
    running statistics updated exactly as ``nn.BatchNorm`` does on the concatenated batch.
    Evaluation: the running statistics, as usual. Same parameters and buffers as BatchNorm, so
    checkpoints load into the plain model.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(input)
        dims = [0] + list(range(2, input.dim()))
        channels = input.shape[1]
        shape = [1, channels] + [1] * (input.dim() - 2)
        # One all-reduce per pass (collectives dominate the cost): sums and sums of squares in
        # float64, so E[x²] − E[x]² keeps float32 BatchNorm's precision.
        wide = input.double()
        count = torch.tensor([input.numel() / channels], dtype=wide.dtype, device=input.device)
        sums = sum_across_ranks(torch.cat([wide.sum(dims), (wide * wide).sum(dims), count]))
        n = sums[-1]
        mean64 = sums[:channels] / n
        var64 = (sums[channels : 2 * channels] / n - mean64 * mean64).clamp(min=0)
        mean, var = mean64.to(input.dtype), var64.to(input.dtype)
        centred = input - mean.view(shape)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum
                if momentum is None:
                    momentum = 1.0 / float(self.num_batches_tracked)
                unbiased = var.detach() * n.detach() / (n.detach() - 1).clamp(min=1)
                self.running_mean.mul_(1 - momentum).add_(momentum * mean.detach())
                self.running_var.mul_(1 - momentum).add_(momentum * unbiased)
        out = centred * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def convert_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm of ``module`` synchronised across ranks (SyncBatchNorm on CUDA)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    converted = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
        module, AllReduceBatchNorm
    ):
        converted = AllReduceBatchNorm(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
        )
        if module.affine:
            with torch.no_grad():
                converted.weight.copy_(module.weight)
                converted.bias.copy_(module.bias)
        if module.track_running_stats:
            converted.running_mean.copy_(module.running_mean)
            converted.running_var.copy_(module.running_var)
            converted.num_batches_tracked.copy_(module.num_batches_tracked)
        converted.train(module.training)
    for name, child in module.named_children():
        converted.add_module(name, convert_batchnorm(child, device))
    return converted


def wrap_model(model: nn.Module, context: DistributedContext, device: torch.device) -> nn.Module:
    """The module to train: ``model`` itself, or its DDP wrapper (parameters, circuit weights
    included, are broadcast from rank 0 and their gradients averaged across ranks)."""
    if not context.enabled:
        return model
    device_ids = [device.index] if device.type == "cuda" and device.index is not None else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when torch sees a GPU, else CPU; ``cuda`` without a GPU is an error.
    Under torchrun each rank takes GPU ``LOCAL_RANK``."""
    if name not in DEVICES:
        raise ConfigError(f"device must be one of {', '.join(DEVICES)}, got {name!r}")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError("--device cuda, but torch sees no GPU (torch.cuda.is_available())")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())


__all__ = [
    "AllReduceBatchNorm",
    "DEVICES",
    "DistributedContext",
    "SINGLE_PROCESS",
    "current_context",
    "barrier",
    "convert_batchnorm",
    "gather_rows",
    "init_distributed",
    "resolve_device",
    "shard",
    "shutdown",
    "wrap_model",
]
