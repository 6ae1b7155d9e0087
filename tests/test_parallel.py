"""FSDP2 and DDP on CPU (gloo, 2 processes): a sharded step + shard-local EMA equals the unsharded one."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from trainer.ema import ema_update_
from trainer.model import SeqJEPA, build_encoder
from trainer.parallel import parallelize, unwrap


def _tiny_model() -> SeqJEPA:
    torch.manual_seed(0)
    return SeqJEPA(build_encoder("convnet", in_channels=1, width=4), action_dim=7, action_proj_dim=8, num_layers=2,
                   pred_hidden=16, dropout=0.0)


def _batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(6, 3, 1, 16, 16, generator=g), torch.randn(6, 1, 16, 16, generator=g), torch.randn(6, 3, 7, generator=g)


def _step(model, optimizer, batch):
    out = model(*batch)
    optimizer.zero_grad()
    out.loss.backward()
    optimizer.step()
    inner = unwrap(model)
    ema_update_(inner.target_encoder, inner.encoder, 0.9)
    return out.loss.detach()


def _worker(rank: int, world: int, port: int, strategy: str, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    reference, model = _tiny_model(), _tiny_model()
    model = parallelize(model, strategy, torch.device("cpu"))
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    batch = _batch()  # the same data on both ranks: averaged gradients equal the single-process ones
    for _ in range(2):
        _step(reference, ref_opt, batch)
        _step(model, opt, batch)
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    if rank == 0:
        ref = reference.state_dict()
        worst = max((full[k].float() - ref[k].float()).abs().max().item() for k in ref)
        moved = (ref["target_encoder.blocks.0.0.weight"] - _tiny_model().state_dict()["target_encoder.blocks.0.0.weight"]).abs().max().item()
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
