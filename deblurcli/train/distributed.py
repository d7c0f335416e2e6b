"""Multi-process training under ``torchrun``: process group, rank roles and the few collectives the loop needs.

``deblur train`` runs unchanged under ``torchrun --nproc_per_node=N`` (one or several nodes): torchrun sets
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``, and :func:`session` turns
them into a process group (NCCL on CUDA, one GPU per process chosen by ``LOCAL_RANK``; gloo on the CPU).
Without those variables, or with ``WORLD_SIZE=1``, nothing here runs and no process group exists, so a
plain ``deblur train`` behaves exactly as it always did.

Roles: every rank trains (DistributedDataParallel averages G's and the critic's gradients); rank 0 alone
reads the checkpoint (and broadcasts it, so multi-node runs need no shared filesystem for it), writes the
log, validates, exports and checkpoints while the others wait at a barrier. Every decision that changes
what a rank does next (stop, drop a non-finite step, fail) is taken collectively, because one rank
taking a different branch would leave the others waiting in a collective forever.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from deblurcli.errors import DeblurError, DeviceError

T = TypeVar("T")

#: How long a rank waits in a collective before giving up: rank 0 validates and writes checkpoints while
#: the others wait at a barrier, and data loading can differ per rank by minutes on large datasets.
TIMEOUT = timedelta(minutes=30)
#: torchrun's variables; ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` are read here, the address by ``env://``.
ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class AllRanksError(DeblurError):
    """An error every rank raises alike (decided collectively), so only rank 0 needs to report it."""


@dataclass(frozen=True)
class Dist:
    """This process's place in a multi-process run."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def requested() -> bool:
    """Whether this process was started by torchrun (or alike) as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def env_rank() -> int:
    """The global rank from the environment (0 for a single process), usable before any process group."""
    return int(os.environ.get("RANK", "0") or 0) if requested() else 0


def _device_for(spec: str, local_rank: int) -> torch.device:
    from deblurcli.devices import resolve_device

    device = resolve_device(spec)
    if device.type == "cuda":
        # One GPU per process: LOCAL_RANK picks it, whatever index --device named.
        if local_rank >= torch.cuda.device_count():
            raise DeviceError(
                f"LOCAL_RANK {local_rank} has no GPU: this node has {torch.cuda.device_count()}; "
                "start at most that many processes per node (torchrun --nproc_per_node)"
            )
        return torch.device("cuda", local_rank)
    if device.type != "cpu":
        raise DeviceError(f"multi-process training runs on CUDA (nccl) or the CPU (gloo), not on {device.type}")
    return device


@contextlib.contextmanager
def session(device_spec: str) -> Iterator[Dist | None]:
    """A process group for the run's lifetime when started as several processes, else ``None``."""
    if not requested():
        yield None
        return
    import torch.distributed as dist

    missing = [name for name in ENV_VARS if not os.environ.get(name)]
    if missing:
        raise DeblurError(
            f"WORLD_SIZE is set but {', '.join(missing)} is not: start multi-process training with torchrun"
        )
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    device = _device_for(device_spec, local)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world, timeout=TIMEOUT)
    try:
        yield Dist(rank=rank, world_size=world, local_rank=local, device=device, backend=backend)
    finally:
        dist.destroy_process_group()


def rank_seed(seed: int, stream: int, rank: int, step: int) -> int:
    """A seed for random stream ``stream`` of ``rank`` at ``step``: distinct per rank (each rank draws
    its own crops, blur and augmentations), reproducible from the run's seed, independent of world size."""
    return int(np.random.SeedSequence([seed, stream, rank, step]).generate_state(1, np.uint64)[0] >> 1)


def wrap(module: nn.Module, ctx: Dist) -> nn.Module:
    """DistributedDataParallel around ``module`` (whose weights it broadcasts from rank 0).

    Buffers are not re-broadcast at each forward: the generators have none that change, and spectral
    norm's power-iteration vectors are updated identically on every rank from identical weights (the
    broadcast would also write them in place between the critic's forwards, which autograd rejects).
    """
    import inspect
    import warnings

    from torch.nn.parallel import DistributedDataParallel

    # A conv weight with a size-1 dimension (the critic's 1-channel head) gets a gradient whose stride
    # along that dimension differs from the bucket's; the copy is right and the warning is noise
    # (pytorch/pytorch#70222).
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    # torch >= 2.14 renamed broadcast_buffers (deprecated there) to forward_sync_buffers.
    renamed = "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters
    no_sync: dict[str, Any] = {"forward_sync_buffers": False} if renamed else {"broadcast_buffers": False}
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids, **no_sync)


def broadcast_tensors(tensors: list[torch.Tensor], ctx: Dist) -> None:
    """Overwrite ``tensors`` in place with rank 0's (e.g. the EMA copy, which DDP does not manage)."""
    import torch.distributed as dist

    with torch.no_grad():
        for t in tensors:
            dist.broadcast(t, src=0)


def from_main(ctx: Dist, fn: Callable[[], T]) -> T:
    """``fn()`` run on rank 0 and its result sent to every rank; a :class:`DeblurError` it raises is
    raised on every rank (as :class:`AllRanksError`), so no rank is left waiting for the others."""
    import torch.distributed as dist

    box: list[Any] = [None]
    if ctx.is_main:
        try:
            box[0] = ("ok", fn())
        except DeblurError as exc:
            box[0] = ("error", str(exc))
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if kind == "error":
        raise AllRanksError(value)
    return value  # type: ignore[no-any-return]


def gather(ctx: Dist, fn: Callable[[], T]) -> list[T]:
    """``fn()`` on every rank, the results of all ranks in rank order on every rank; a
    :class:`DeblurError` on any rank is raised on all of them (the lowest rank's message)."""
    import torch.distributed as dist

    try:
        mine: tuple[str, Any] = ("ok", fn())
    except DeblurError as exc:
        mine = ("error", str(exc))
    results: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(results, mine)
    for kind, value in results:
        if kind == "error":
            raise AllRanksError(value)
    return [value for _, value in results]


def sum_(values: torch.Tensor) -> torch.Tensor:
    """Element-wise sum over ranks (in place, returned): one small all-reduce."""
    import torch.distributed as dist

    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def barrier(ctx: Dist) -> None:
    """Wait until every rank is here (the others wait while rank 0 validates and writes)."""
    import torch.distributed as dist

    if ctx.device.type == "cuda":
        dist.barrier(device_ids=[ctx.device.index])
    else:
        dist.barrier()
