"""torchrun-launched DistributedDataParallel: setup, teardown, collectives we need.

torchrun is the only launcher: it sets RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous
for one node or many.  Without those variables everything runs as a single process.
"""
from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from lt_bench.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.backend is not None

    def barrier(self) -> None:
        if self.is_distributed:
            dist.barrier()

    def broadcast_object(self, obj):
        """Rank 0's ``obj`` on every rank."""
        if not self.is_distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_gather_object(self, obj) -> list:
        if not self.is_distributed:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.is_distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def broadcast_buffers(self, module: torch.nn.Module) -> None:
        """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

        DDP syncs buffers at the start of each forward, so after the last training step
        every rank holds statistics updated by its own batch; evaluation and checkpoints
        need the replicas identical.
        """
        if self.is_distributed:
            for buffer in module.buffers():
                dist.broadcast(buffer.data, src=0)

    def gather_uneven(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate every rank's ``tensor`` (first dimensions may differ), in rank order."""
        if not self.is_distributed:
            return tensor
        local = tensor.to(self.device)
        sizes = torch.tensor([local.shape[0]], device=self.device)
        all_sizes = [torch.zeros_like(sizes) for _ in range(self.world_size)]
        dist.all_gather(all_sizes, sizes)
        all_sizes = [int(s.item()) for s in all_sizes]
        padded = local.new_zeros((max(all_sizes), *local.shape[1:]))
        padded[: local.shape[0]] = local
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded)
        return torch.cat([p[:n] for p, n in zip(parts, all_sizes)]).to(tensor.device)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name not in DEVICES:
        raise ConfigError(f"unknown device {name!r}; valid: {', '.join(DEVICES)}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA GPU is visible; use device=cpu or device=auto")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda", local_rank)


def setup(device: str = "auto", timeout_minutes: float = 30.0) -> DistContext:
    """Join the torchrun process group if launched by torchrun (NCCL on CUDA, gloo on CPU)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistContext(device=resolve_device(device))
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=timedelta(minutes=timeout_minutes),
                            **({"device_id": dev} if dev.type == "cuda" else {}))
    return DistContext(rank, world_size, local_rank, dev, backend)


def teardown(ctx: DistContext) -> None:
    """Leave the process group.  Callers drop their DDP models first: on CPU/gloo a live DDP
    model at destroy_process_group() intermittently aborts the process."""
    gc.collect()
    if ctx.is_distributed and dist.is_initialized():
        dist.destroy_process_group()
