"""Running the same training code under ``torchrun --nproc_per_node N`` (DistributedDataParallel).

``init_from_env`` reads torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) and starts the process
group (gloo on CPU, nccl on GPU); without it everything here is a single-process no-op, so trainers need no
branches. Only rank 0 writes: the runner gives the other ranks a ``RankRun`` (``kexue.experiments.rundir``)
that writes nothing.
"""

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from kexue.errors import KexueError

_current = None  # set by init_from_env


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: ``rank`` of ``world_size``, ``local_rank`` on its node, and its ``device``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")  # noqa: RUF009 - immutable, safe as a shared default

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_from_env(device: str = "cpu") -> DistInfo:
    """Start the process group if torchrun launched us (``WORLD_SIZE > 1``); else a single-process ``DistInfo``.

    Args:
        device: ``"cpu"`` (gloo backend) or ``"cuda"`` (nccl, one GPU per process: ``cuda:LOCAL_RANK``).
    """
    global _current
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        _current = DistInfo(device=torch.device(device))
        return _current
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        if not torch.cuda.is_available():
            raise KexueError("device=cuda under torchrun but torch sees no CUDA device")
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    _current = DistInfo(rank, world, local, dev)
    return _current


def current() -> DistInfo:
    """The ``DistInfo`` the last :func:`init_from_env` returned (single process if none, or if the group is gone)."""
    if _current is None or (_current.distributed and not dist.is_initialized()):
        return DistInfo()
    return _current


def wrap(model: nn.Module, info: DistInfo) -> nn.Module:
    """``DistributedDataParallel(model)`` when distributed, else ``model`` itself."""
    if not info.distributed:
        return model
    ids = [info.device.index] if info.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def any_true(flag: bool, info: DistInfo) -> bool:
    """True on every rank if ``flag`` is true on any rank (so that all ranks take the same branch)."""
    if not info.distributed:
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def broadcast_parameters(module: nn.Module, info: DistInfo) -> None:
    """Copy rank 0's parameters and buffers to every rank (what DDP does at wrap time), in place."""
    if not info.distributed:
        return
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            dist.broadcast(t.data, src=0)


def all_reduce_gradients(params: nn.Module | Iterable[torch.Tensor], info: DistInfo) -> None:
    """Average ``.grad`` over ranks, in place: DDP's reduction done by hand, after ``backward()``.

    For trainers that DDP does not fit: a GAN step differentiates the critic twice (gradient penalties use
    ``create_graph=True``) and updates two networks in alternation, which DDP's bucketed hooks do not support.
    Parameters whose ``.grad`` is None are left alone; the same code on every rank leaves the same ones None.
    """
    if not info.distributed:
        return
    params = params.parameters() if isinstance(params, nn.Module) else params
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])  # one collective instead of one per tensor
    dist.all_reduce(flat)
    flat /= info.world_size
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every rank (e.g. the run directory's path)."""
    if not info.distributed:
        return obj
    box = [obj if info.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shutdown(info: DistInfo) -> None:
    """Leave the process group together: a rank that tears gloo down while a peer is still busy (rank 0 writing its
    checkpoint) can abort at exit ("terminate called without an active exception"), so meet at a barrier first."""
    if info.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
