"""One run on several processes (``torchrun``): the environment, the process group and the few collectives
the training loop needs.

``torchrun --nproc_per_node=N -m lpc train ...`` starts N copies of ``lpc train``; each reads its rank from
the environment (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``). How the loop divides the work:

* every rank draws the same permutation of the training set each epoch (seeded by the run's seed and the
  epoch) and takes a disjoint shard of every batch, so ``optim.batch_size`` stays the *global* batch and the
  paper's learning rates apply unchanged; each rank's augmentation draws its own random numbers;
* gradients are averaged by DistributedDataParallel; BatchNorm normalises with each rank's own batch
  statistics (no SyncBatchNorm: it would add two all-reduces per BatchNorm layer per step), and its running
  statistics are rank 0's, broadcast at every forward pass;
* rank 0 alone evaluates (on the full splits, so nothing is gathered), writes the run files and shows
  progress; the others wait for its verdict at each evaluation.

Without these variables (or with ``WORLD_SIZE=1``) everything here is a no-op.
"""
from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Distributed:
    """Where this process sits among the processes that train one run."""

    rank: int = 0
    local_rank: int = 0  # index of this process on its machine: its GPU
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = Distributed()


def from_env() -> Distributed:
    """The rank and world size that ``torchrun`` (or any launcher setting its variables) gives this process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    return Distributed(rank=int(os.environ.get("RANK", "0")), local_rank=int(os.environ.get("LOCAL_RANK", "0")),
                       world_size=world)


def resolve_device(name: str) -> torch.device:
    """``config.device`` as a torch device: ``auto`` is CUDA when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def device_for(device: torch.device, where: Distributed) -> torch.device:
    """Each process of a multi-GPU run gets the GPU of its local rank; CPU processes share the CPU."""
    if where.enabled and device.type == "cuda" and device.index is None:
        return torch.device("cuda", where.local_rank)
    return device


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[Distributed]:
    """Joins the process group for the duration of one run (NCCL on GPUs, gloo on CPUs) and leaves it after.

    A group the caller already initialised is used as is and left open.
    """
    where = from_env()
    created = False
    if where.enabled and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        # the other ranks wait while rank 0 evaluates (geometry, entropy): allow it far longer than the default
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=datetime.timedelta(hours=2))
        created = True
    try:
        yield where
    finally:
        if created:
            dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, where: Distributed) -> torch.Tensor:
    """Sums ``tensor`` over all ranks in place (a no-op on one process)."""
    if where.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_from_main(value: Any, where: Distributed) -> Any:
    """Rank 0's ``value`` (any picklable object) on every rank."""
    if not where.enabled:
        return value
    box = [value if where.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(where: Distributed) -> None:
    """Waits until every rank gets here."""
    if where.enabled:
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()
