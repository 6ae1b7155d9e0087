"""Losses over the global batch (docs/paper-and-original-code.md#a1-no-gradient-sync-across-gpus): with 2 ranks under
DDP or FSDP2, every method with a cross-sample term gives the loss and the parameter gradients of one process on the
concatenated batch.

The models run in eval mode, so BatchNorm uses running statistics and the loss is the only place where the
samples of different ranks meet (BN batch statistics are per rank on CPU).
"""

from __future__ import annotations

import os
import socket
import traceback

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from trainer.methods.build import build_method
from trainer.methods.catalog import method_entry
from trainer.model import build_encoder

CROSS_SAMPLE = ["equimod", "sen", "sie", "simclr", "vicreg", "vicreg_traj"]
WORLD, GLOBAL_BATCH, ACTION_DIM = 2, 8, 4


def _model(name: str):
    torch.manual_seed(0)
    encoder = build_encoder("convnet", in_channels=1, width=4)
    settings = method_entry(name).settings(projector_dims=[32, 16])
    return build_method(name, encoder, ACTION_DIM, settings, action_proj_dim=8).eval()


def _global_batch():
    g = torch.Generator().manual_seed(1)
    return (torch.randn(GLOBAL_BATCH, 3, 1, 16, 16, generator=g),
            torch.randn(GLOBAL_BATCH, 2, ACTION_DIM, generator=g))


def _loss_and_grads(model, named_params, views, actions):
    loss = model(views, actions).loss
    loss.backward()
    grads = {}
    for name, param in named_params:
        grad = param.grad.full_tensor() if hasattr(param.grad, "full_tensor") else param.grad  # FSDP2: a DTensor
        grads[name] = grad.detach().numpy().copy()
    return loss.item(), grads


def _parallelize(model, strategy: str):
    if strategy == "ddp":
        return torch.nn.parallel.DistributedDataParallel(model)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (WORLD,))
    fully_shard(model.encoder, mesh=mesh)
    for unit in model.shard_units():
        fully_shard(unit, mesh=mesh)
    return fully_shard(model, mesh=mesh)


SPLITS = {"even": [4, 4], "uneven": [3, 5]}  # rows per rank: a short batch on one rank (a val tail, a dropped sample)


def _worker(rank: int, port: int, strategy: str, split: str, queue) -> None:
    try:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=WORLD)
        torch.set_num_threads(1)
        views, actions = _global_batch()
        counts = SPLITS[split]
        rows = slice(sum(counts[:rank]), sum(counts[:rank + 1]))
        results = {}
        for name in CROSS_SAMPLE:
            wrapped = _parallelize(_model(name), strategy)
            inner = wrapped.module if strategy == "ddp" else wrapped  # FSDP2 keeps the names, DDP adds 'module.'
            results[name] = _loss_and_grads(wrapped, list(inner.named_parameters()), views[rows], actions[rows])
        queue.put((rank, results))
        dist.destroy_process_group()
    except Exception:  # noqa: BLE001 - the parent shows the worker's traceback instead of timing out
        queue.put((rank, traceback.format_exc()))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_two_ranks(strategy: str, split: str) -> dict[int, dict]:
    ctx = mp.get_context("spawn")
    queue, port = ctx.Queue(), _free_port()
    procs = [ctx.Process(target=_worker, args=(rank, port, strategy, split, queue)) for rank in range(WORLD)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=300) for _ in range(WORLD))
    for p in procs:
        p.join(timeout=60)
    for rank, result in results.items():
        assert not isinstance(result, str), f"rank {rank} failed:\n{result}"
    return results


@pytest.mark.parametrize("strategy,split", [("ddp", "even"), ("fsdp2", "even"), ("fsdp2", "uneven")])
def test_two_ranks_give_the_single_process_loss_and_gradients(strategy, split):
    results = _run_two_ranks(strategy, split)
    views, actions = _global_batch()
    for name in CROSS_SAMPLE:
        model = _model(name)
        loss, grads = _loss_and_grads(model, list(model.named_parameters()), views, actions)
        for rank in range(WORLD):
            rank_loss, rank_grads = results[rank][name]
            assert rank_loss == pytest.approx(loss, rel=1e-5), f"{name} rank {rank} loss"
            assert rank_grads.keys() == grads.keys()
            for param_name, grad in grads.items():
                torch.testing.assert_close(torch.from_numpy(rank_grads[param_name]), torch.from_numpy(grad),
                                           rtol=1e-4, atol=1e-6, msg=f"{name} rank {rank} grad of {param_name}")
