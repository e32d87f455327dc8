"""torchrun: one process per GPU, or per share of the CPU cores. Every long verb shards its work by rank (every item
exactly once), sums its counts with one all_reduce, and lets rank 0 print and write the totals.

Without torchrun every function here is the identity on one process, so callers need no second code path."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

from seglite.sharing import launched, local_processes

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launched: bool = False  # started by torchrun: a process group even for one process (DDP + NCCL exercised)
    local_world_size: int = 1  # processes on this machine (they share its cores)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1 or self.launched


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group torchrun set up; nothing to do without torchrun."""
    if not launched():
        return DistInfo()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistInfo(rank, world, local, "TORCHELASTIC_RUN_ID" in os.environ, local_processes())


def shard(items: Sequence[T], info: DistInfo) -> list[T]:
    """This rank's items: every `world_size`-th from `rank` on. Every item lands on exactly one rank, also when the
    count does not divide (the first ranks get one more); interleaved, so ranks get alike mixes of a sorted list."""
    return list(items[info.rank :: info.world_size]) if info.enabled else list(items)


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def gather_objects(obj: T, info: DistInfo) -> list[T]:
    """Every rank's `obj` (picklable), in rank order, on every rank."""
    if not info.enabled:
        return [obj]
    gathered: list = [None] * info.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_flag(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True on every rank if it is true on any (used for stop requests)."""
    if not info.enabled:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def broadcast_buffers(module: torch.nn.Module, info: DistInfo) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank. DDP syncs buffers at the start of each
    forward, then every rank updates its own from its own batch: before the ranks evaluate shards of one split,
    they must hold the same network, the one rank 0 saves."""
    if info.enabled:
        for buffer in module.buffers():
            dist.broadcast(buffer.data, src=0)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    """Leave the group together: a rank that exits while another still talks to it can make gloo abort the other
    (SIGABRT on a closed connection), so every rank waits for all before the group is torn down."""
    if info.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
