"""Building a worker's training state from the config: the model, sharded or wrapped, its probes and optimizers."""

from __future__ import annotations

import torch

from data_pipeline import SequenceLoader
from trainer.config import Config
from trainer.methods.build import build_model
from trainer.training.compile import compile_model
from trainer.training.optim import build_optimizer
from trainer.training.parallel import parallelize, replicate
from trainer.training.probes import OnlineProbes
from trainer.training.state import TrainState, seed_rank


def build_train_state(config: Config, device: torch.device, *, action_dim: int, channels: int, num_classes: int,
                      loader: SequenceLoader | None = None, rank: int = 0) -> TrainState:
    """A fresh state at step 0 for data of that shape (`loader`: the training loader whose position it keeps);
    with `train.compile` the model is compiled block by block, then under torch.distributed sharded (FSDP2) or
    wrapped (DDP)."""
    torch.manual_seed(config.train.seed)  # identical initial weights on every rank
    model = build_model(config, action_dim, channels).to(device)
    probes = OnlineProbes(model.encoder.out_dim, model.aggregate_dim, action_dim, num_classes, config.probe.hidden)
    probes = probes.to(device)
    seed_rank(config.train.seed, rank)
    if config.train.compile:  # before sharding: FSDP2's hooks stay outside the compiled blocks
        units = compile_model(model, config.train.compile_mode)
        if rank == 0:
            print(f"[seq-jepa] train.compile: {units} blocks compile at the first step (and the first validation)",
                  flush=True)
    model = parallelize(model, config.scaling.parallelism, device)
    probes = replicate(probes, device)
    return TrainState(model, build_optimizer(model, config.optim), probes,
                      torch.optim.Adam(probes.parameters(), lr=config.probe.lr), loader, device)


def train_state_for(config: Config, loader: SequenceLoader, device: torch.device, rank: int = 0) -> TrainState:
    """A fresh state for the data `loader` yields, keeping its position."""
    return build_train_state(config, device, action_dim=loader.action_dim, channels=loader.channels,
                             num_classes=loader.num_classes, loader=loader, rank=rank)
