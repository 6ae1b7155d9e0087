"""FSDP2 and DDP on CPU (gloo, 2 processes): a sharded step + shard-local EMA equals the unsharded one."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from trainer.methods.seq_jepa import SeqJEPA
from trainer.model import build_encoder
from trainer.training.parallel import parallelize, replicate
from trainer.training.probes import OnlineProbes
from trainer.training.state import TrainState
from trainer.training.step import train_step

CPU = torch.device("cpu")


def _tiny_model() -> SeqJEPA:
    torch.manual_seed(0)
    return SeqJEPA(build_encoder("convnet", in_channels=1, width=4), action_dim=7, action_proj_dim=8, num_layers=2,
                   pred_hidden=16, dropout=0.0)


def _state(model: SeqJEPA, strategy: str | None) -> TrainState:
    """The trainer's state around `model`: sharded/wrapped by `strategy`, or plain (None)."""
    torch.manual_seed(1)
    probes = OnlineProbes(model.encoder.out_dim, model.token_dim, 7, 10, 8)
    if strategy is not None:
        model, probes = parallelize(model, strategy, CPU), replicate(probes, CPU)
    return TrainState(model, torch.optim.SGD(model.parameters(), lr=0.1), probes,
                      torch.optim.Adam(probes.parameters(), lr=1e-3), None, CPU)


def _batch() -> dict:
    g = torch.Generator().manual_seed(1)
    return {"views": torch.randn(6, 4, 1, 16, 16, generator=g), "rel_actions": torch.randn(6, 3, 7, generator=g),
            "label": torch.randint(0, 10, (6,), generator=g), "actions": torch.randn(6, 4, 7, generator=g)}


def _worker(rank: int, world: int, port: int, strategy: str, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    reference, sharded = _state(_tiny_model(), None), _state(_tiny_model(), strategy)
    batch = _batch()  # the same data on both ranks: averaged gradients equal the single-process ones
    for _ in range(2):  # the trainer's own step: forward, backward, optimizer, EMA, probes
        train_step(reference, batch, 0.1, 0.9, None, bf16=False)
        train_step(sharded, batch, 0.1, 0.9, None, bf16=False)
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(sharded.model, options=StateDictOptions(full_state_dict=True))
    if rank == 0:
        ref = reference.model.state_dict()
        worst = max((full[k].float() - ref[k].float()).abs().max().item() for k in ref)
        key = "target_encoder.blocks.0.0.weight"
        moved = (ref[key] - _tiny_model().state_dict()[key]).abs().max().item()
        queue.put((sorted(full) == sorted(ref), worst, moved))
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("strategy", ["fsdp2", "ddp"])
def test_sharded_step_and_ema_match_single_process(strategy):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, 2, port, strategy, queue)) for r in range(2)]
    for p in procs:
        p.start()
    same_keys, worst, moved = queue.get(timeout=120)
    for p in procs:
        p.join(timeout=60)
    assert same_keys, "sharded model's full state dict has different keys"
    assert moved > 0, "the EMA target did not move"
    assert worst < 1e-5, f"sharded weights differ from the single-process reference by {worst}"
