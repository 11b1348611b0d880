"""torchrun support: process groups, a deterministic sharded sampler, DDP / FSDP wrapping, and
the collectives the trainer needs (rank-0 logging and saving, full state dicts).

One process per device. `torchrun` sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR /
MASTER_PORT; without them everything here degrades to a single process and no collectives.
Backends: gloo on CPU, nccl on CUDA. Strategies: "ddp" replicates the model (small models),
"fsdp" shards parameters, gradients and optimizer state with FSDP2 `fully_shard` (large models).
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Sampler

STRATEGIES = ("ddp", "fsdp")


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job and which device it trains on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """Only rank 0 logs, evaluates and writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """ "auto": this rank's GPU when CUDA is available, else the CPU; "cuda": this rank's GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return torch.device("cuda", local_rank)
    return torch.device(name)


def init_distributed(device: str = "auto") -> DistContext:
    """The process group from torchrun's environment (a no-op for a single process).

    Calling it again in an initialised process returns the same context.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext(device=resolve_device(device))
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    target = resolve_device(device, local_rank)
    if target.type == "cuda":
        torch.cuda.set_device(target)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if target.type == "cuda" else "gloo")
    return DistContext(rank, world_size, local_rank, target)


def current_context(device: str = "auto") -> DistContext:
    """The context of an already initialised process group, or a single-process one."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistContext(device=resolve_device(device))
    local_rank = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    target = resolve_device(device, local_rank)
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, target)


def shutdown_distributed() -> None:
    """Close the process group after every rank finished its work.

    The DDP / FSDP wrappers of the finished run are freed first and the ranks meet at a barrier:
    a gloo group that is freed only at interpreter exit, or closed while another rank still
    talks to it, can abort the process after training succeeded. Call it only on success: after
    an error the other ranks may never reach the barrier, and torchrun stops them anyway.
    """
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def all_reduce_sum(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Element-wise sum over ranks (returns a new tensor; the input is untouched)."""
    out = values.detach().clone()
    if ctx.distributed:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def broadcast_object(value: Any, ctx: DistContext) -> Any:
    """Rank 0's `value` on every rank (small Python objects, e.g. evaluation metrics)."""
    if not ctx.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(value: Any, ctx: DistContext) -> list[Any]:
    """Every rank's `value`, in rank order, on every rank."""
    if not ctx.distributed:
        return [value]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, value)
    return out


# ---------------------------------------------------------------- sampler
class EpochSampler(Sampler[int]):
    """Deterministic per-epoch order, sharded over ranks; compatible with DistributedSampler.

    The order of an epoch is a permutation seeded by (seed, epoch) only, so it is the same in
    every run, with any number of DataLoader workers. Rank r takes positions r, r + W, ... of it,
    so the global batch k (the local batches k of all W ranks together) holds the same samples
    as batch k of one process with a W-times larger batch. With `drop_last` the tail that does
    not fill a global batch is dropped; otherwise the order is padded by wrapping around to a
    multiple of the world size (as DistributedSampler does).
    `set_start(n)` skips the first n local batches of the epoch (resuming mid-epoch).
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int = 1,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
    ):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.epoch = 0
        self.start_batch = 0

    @property
    def _epoch_size(self) -> int:
        """Samples per epoch over all ranks: whole global batches, or padded to the world size."""
        if self.drop_last:
            global_batch = self.batch_size * self.world_size
            return self.num_samples // global_batch * global_batch
        return -(-self.num_samples // self.world_size) * self.world_size

    @property
    def num_batches(self) -> int:
        """Local batches per epoch (the same on every rank; the last may be short without drop_last)."""
        return -(-self._epoch_size // self.world_size // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.start_batch = 0

    def set_start(self, batches: int) -> None:
        self.start_batch = batches

    def epoch_order(self) -> list[int]:
        """The global order of this epoch, cut to whole global batches or padded by wrapping."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.num_samples, generator=generator).tolist()
        else:
            order = list(range(self.num_samples))
        size = self._epoch_size
        while order and len(order) < size:
            order += order[: size - len(order)]
        return order[:size]

    def __iter__(self) -> Iterator[int]:
        local = self.epoch_order()[self.rank :: self.world_size]
        return iter(local[self.start_batch * self.batch_size :])

    def __len__(self) -> int:
        local = self._epoch_size // self.world_size
        return max(0, local - self.start_batch * self.batch_size)


# ---------------------------------------------------------------- wrapping
def _layer_stacks(module: nn.Module) -> list[nn.Module]:
    """Transformer blocks: every child of a ModuleList named `layers` (LLM and ViT blocks)."""
    blocks = []
    for name, child in module.named_modules():
        if name.split(".")[-1] == "layers" and isinstance(child, nn.ModuleList):
            blocks.extend(child)
    return blocks


def wrap_model(module: nn.Module, strategy: str, ctx: DistContext) -> nn.Module:
    """`module` ready for data-parallel training; unchanged in a single process.

    ddp: a DistributedDataParallel replica (all trainable parameters must be used in forward).
    fsdp: FSDP2 shards every transformer block and then the root, in place; the returned module
    is `module` itself.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r} (known: {', '.join(STRATEGIES)})")
    if not ctx.distributed:
        return module
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=device_ids)
    from torch.distributed.fsdp import fully_shard

    for block in _layer_stacks(module):
        fully_shard(block)
    fully_shard(module)
    return module


def gradient_sync(module: nn.Module, sync: bool) -> contextlib.AbstractContextManager:
    """Skip the gradient all-reduce on micro-batches that are not the last of an accumulation."""
    from torch.nn.parallel import DistributedDataParallel

    if isinstance(module, DistributedDataParallel) and not sync:
        return module.no_sync()
    if hasattr(module, "set_requires_gradient_sync"):  # FSDP2
        module.set_requires_gradient_sync(sync)
    return contextlib.nullcontext()


def is_sharded(strategy: str, ctx: DistContext) -> bool:
    return strategy == "fsdp" and ctx.distributed


def full_state_dict(module: nn.Module, strategy: str, ctx: DistContext) -> dict[str, torch.Tensor]:
    """The whole model's tensors; with FSDP gathered onto rank 0's CPU (empty on other ranks).

    Every rank must call it (it is a collective under FSDP).
    """
    if not is_sharded(strategy, ctx):
        return module.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(module, options=options)


def optimizer_state(
    module: nn.Module, optimizer: torch.optim.Optimizer, strategy: str, ctx: DistContext
) -> dict[str, Any]:
    """The optimizer state keyed by parameter name; under FSDP gathered onto rank 0's CPU.

    Keys by name (not by position) keep a saved state valid whatever the wrapping.
    """
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_optimizer_state_dict,
    )

    sharded = is_sharded(strategy, ctx)
    options = StateDictOptions(full_state_dict=sharded, cpu_offload=sharded)
    return get_optimizer_state_dict(module, optimizer, options=options)


def load_optimizer_state(
    module: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> None:
    """Load a name-keyed full optimizer state (every rank passes the whole state)."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True)
    set_optimizer_state_dict(module, optimizer, state, options=options)
