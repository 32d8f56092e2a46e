"""Multi-process data parallel under torchrun: process group, sampler, gathers."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> DistInfo:
    """Join torchrun's process group when launched by it (WORLD_SIZE > 1): nccl on GPU, gloo
    on CPU. A plain `python`/`inception-fast` launch is one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if device_type == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return DistInfo(rank, world, local)


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def check_global_batch(batch: int, world: int, accum: int = 1) -> None:
    if batch < world:
        raise ValueError(f"--batch-size {batch} (global) is below the number of processes "
                         f"({world}): every rank needs at least one sample per step")
    if batch % (world * accum):
        raise ValueError(f"--batch-size {batch} (global) must be divisible by processes x "
                         f"--accum-steps = {world} x {accum}")


class GlobalBatchSampler(DistributedSampler):
    """DistributedSampler (same seeded permutation per epoch, ranks interleaved) whose padding
    (wrap-around repeats) fills the last GLOBAL batch, so every step of every rank is full and
    the global batch i is the same set of samples for any number of ranks:
    rank r's batch i = padded[i*B + r : (i+1)*B : world]."""

    def __init__(self, n: int, global_batch: int, rank: int, world: int, seed: int = 0,
                 shuffle: bool = True):
        super().__init__(range(n), num_replicas=world, rank=rank, shuffle=shuffle, seed=seed,
                         drop_last=False)
        self.global_batch = global_batch
        self.steps = math.ceil(n / global_batch)
        self.total_size = self.steps * global_batch
        self.num_samples = self.total_size // world

    def batches(self) -> list[list[int]]:
        """This rank's index lists, one per step (per-rank batch = global batch / world)."""
        idx = list(iter(self))
        b = self.global_batch // self.num_replicas
        return [idx[i * b:(i + 1) * b] for i in range(self.steps)]


def gather_cat(t: torch.Tensor, info: DistInfo, device) -> list[torch.Tensor]:
    """All ranks' equal-shape `t` as a list in rank order (on CPU)."""
    if not info.enabled:
        return [t]
    x = t.to(device)
    out = [torch.empty_like(x) for _ in range(info.world)]
    dist.all_gather(out, x)
    return [o.cpu() for o in out]


def all_reduce_sum(values: list[float], info: DistInfo, device) -> list[float]:
    if not info.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def gather_objects(obj, info: DistInfo) -> list:
    if not info.enabled:
        return [obj]
    out = [None] * info.world
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, info: DistInfo):
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()
