"""Data parallelism under ``torchrun``: one process per device, gradients averaged across processes.

``torchrun --nproc_per_node=N train_search.py ...`` (or ``train.py``) sets ``WORLD_SIZE``, ``RANK`` and
``LOCAL_RANK``; ``init`` then joins the process group (gloo on CPU, nccl on CUDA) and every process trains a
full replica on its own shard of each batch. Without ``torchrun`` every function here is a no-op.

Why gradients are averaged by hand rather than by wrapping the networks in ``DistributedDataParallel``: DDP
all-reduces only what ``loss.backward()`` produces inside its hooks, once per forward. The search computes
architecture gradients with ``torch.autograd.grad`` (first and second order, and stage 2's double backprop),
runs the supernet several times per step on different batches and toggles which parameters need gradients
between the architecture step and the weight step; DDP would silently skip the first and needs
``find_unused_parameters`` for the rest. ``average_gradients`` is called at every point an optimizer is about
to step, on exactly the parameters it steps, so the weight, discriminator and architecture updates are the
same on every rank and replicas never drift apart (tested: every rank ends with identical architecture
parameters).

Sharding keeps one data stream for the whole job: every rank draws the same ``world_size x batch_size``
crops from the same seeded generator and keeps its own slice, so the sampler's state is identical on all
ranks and the checkpoint written by rank 0 resumes every rank exactly. ``data.batch_size`` is per process,
as in DDP. Rank 0 alone writes the run folder; the others wait for it where the folder must exist.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Iterable
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn

T = TypeVar("T")


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def shard() -> tuple[int, int]:
    """``(rank, world_size)``, as ``PatchSampler.sample`` takes them."""
    return rank(), world_size()


def is_main() -> bool:
    return rank() == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: str) -> torch.device:
    """Joins the process group when launched by torchrun; returns this process's device.

    ``device`` is the configured one (``cpu`` or ``cuda``); under torchrun ``cuda`` means this process's
    ``cuda:LOCAL_RANK``.
    """
    dev = torch.device(device)
    if not launched_by_torchrun():
        return dev
    if dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        # Generous timeout: rank 0 validates and writes checkpoints while the others wait at the next reduce.
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    return dev


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def average_gradients(params: Iterable[nn.Parameter]) -> None:
    """Replaces each ``p.grad`` with its mean over ranks (a missing gradient counts as zero), in one reduce."""
    if world_size() == 1:
        return
    params = [p for p in params if p.grad is not None or p.requires_grad]
    if not params:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
        offset += n


def any_rank(flag: bool) -> bool:
    """True when ``flag`` is true on any rank: decisions that must be taken together (skip a step, stop)."""
    if world_size() == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=_reduce_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def broadcast_module(module: nn.Module | None) -> None:
    """Rank 0's parameters and buffers on every rank (seeded initialisation already agrees; this makes sure)."""
    if module is None or world_size() == 1:
        return
    for t in [*module.parameters(), *module.buffers()]:
        dist.broadcast(t.data, src=0)


def on_main(fn: Callable[[], T], error: type[Exception]) -> T:
    """Runs ``fn`` on rank 0 only (creating a folder, say) and gives every rank its result, or raises ``error``
    with rank 0's message on every rank, so that no rank waits forever for one that failed."""
    if world_size() == 1:
        return fn()
    outcome: list = [None, None]
    if is_main():
        try:
            outcome = [fn(), None]
        except error as e:
            outcome = [None, str(e)]
    dist.broadcast_object_list(outcome, src=0)
    if outcome[1] is not None:
        raise error(outcome[1])
    return outcome[0]


def max_replica_difference(tensors: Iterable[torch.Tensor]) -> float:
    """The largest absolute difference between any rank's ``tensors`` and rank 0's: 0.0 when replicas agree."""
    tensors = [t.detach() for t in tensors]
    if world_size() == 1 or not tensors:
        return 0.0
    mine = torch.cat([t.reshape(-1).double() for t in tensors])
    reference = mine.clone()
    dist.broadcast(reference, src=0)
    diff = (mine - reference).abs().max().reshape(1)
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    return float(diff.item())


def _reduce_device() -> torch.device:
    # nccl reduces only CUDA tensors (this process's device, set by init); gloo only CPU ones.
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
