"""Data parallelism: FSDP2 (`fully_shard` per block) or DDP. The model files know nothing of this.

FSDP2 shards the online encoder and every EMA target with the same per-block layout as its online module, so
every rank holds matching shards of both and the EMA update is a local lerp with no communication. The method
names its other units (transformer layers, projectors, predictors: `shard_units`); the root takes the rest.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.nn.parallel import DistributedDataParallel

from trainer.methods.base import Method
from trainer.model import encoder_blocks


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def parallelize(model: Method, strategy: str, device: torch.device) -> nn.Module:
    if not is_distributed():
        return model
    if strategy == "ddp":
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    for encoder in per_block_encoders(model):
        for block in encoder_blocks(encoder):
            fully_shard(block, mesh=mesh)
        fully_shard(encoder, mesh=mesh)
    for unit in model.shard_units():  # heads, EMA targets of heads included: each one unit, laid out alike
        fully_shard(unit, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def per_block_encoders(model: Method) -> list[nn.Module]:
    """The online encoder and its EMA targets: sharded (and compiled, `train.compile`) block by block, alike."""
    return [model.encoder] + [target for target, online in model.ema_pairs() if online is model.encoder]


def replicate(module: nn.Module, device: torch.device) -> nn.Module:
    """Small modules (probe heads) are replicated with DDP under either strategy."""
    if not is_distributed():
        return module
    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


def unwrap(module: nn.Module) -> nn.Module:
    """The plain module behind a DDP wrapper (FSDP2 modifies the module in place)."""
    return module.module if isinstance(module, DistributedDataParallel) else module
