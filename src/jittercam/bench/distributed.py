"""Running one benchmark over several processes with `torchrun` (on one machine or across nodes).

Under torchrun the environment has `RANK`, `WORLD_SIZE` and `LOCAL_RANK`. With `WORLD_SIZE` > 1 each
process joins a `torch.distributed` group (gloo on the CPU, NCCL on CUDA, where rank r uses
`cuda:LOCAL_RANK`), takes the items `keys[r::world]`, and writes its own store `<stem>.rank<r>-of<w><suffix>`
next to `--db`; `jittercam report` merges the files. The processes meet once at the end (a barrier, and
a sum of the counts, so that rank 0 prints one summary for all of them).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import torch
import torch.distributed as dist

from ..errors import JitterCamError

T = TypeVar("T")
# how long the first rank to finish waits for the last at the final barrier: shards of a big data set
# may finish hours apart (the default, 30 minutes, would abort them)
BARRIER_TIMEOUT = timedelta(hours=48)
_CPU = torch.device("cpu")


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = _CPU

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise JitterCamError(f"environment variable {name}={value!r} is not an integer") from None


def setup(device: torch.device) -> Context:
    """The process's place in the run; joins the process group when started by torchrun with several
    processes. `device` is the `--device` asked for: on CUDA each rank takes `cuda:LOCAL_RANK`."""
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return Context(device=device)
    rank, local = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise JitterCamError(f"LOCAL_RANK {local} has no GPU: this node has {torch.cuda.device_count()}")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=BARRIER_TIMEOUT)
    return Context(rank, world, local, device)


def shard(keys: list[T], context: Context) -> list[T]:
    """This rank's items: every `world_size`-th, starting at its rank."""
    return keys[context.rank :: context.world_size]


def rank_path(db: Path, context: Context) -> Path:
    """`results.db` for one process; `results.rank1-of4.db` for rank 1 of 4."""
    if not context.distributed:
        return db
    return db.with_name(f"{db.stem}.rank{context.rank}-of{context.world_size}{db.suffix}")


def total(counts: list[int], context: Context) -> list[int]:
    """The element-wise sum of `counts` over all ranks (every rank gets it); also the final barrier."""
    if not context.distributed:
        return counts
    device = context.device if dist.get_backend() == "nccl" else torch.device("cpu")
    tensor = torch.tensor(counts, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return [int(value) for value in tensor.tolist()]


def finish(context: Context) -> None:
    """The end of a run that went well: wait for every rank, then leave the group."""
    if context.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def abandon(context: Context) -> None:
    """The end of a run that failed: leave the group without waiting for the others."""
    if context.distributed and dist.is_initialized():
        dist.destroy_process_group()
