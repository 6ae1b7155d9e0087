"""The training loop waits for the device once per logging window, never per step (FSDP2 and DDP, 2 gloo ranks).

Every call from the trainer's own code that makes the host wait for the device (reading a tensor's value:
`item`, `tolist`, `float(t)`, `int(t)`, `bool(t)`) or for the other ranks (a collective it issues itself) is
counted between consecutive steps. On a GPU each of these would stall the stream; on this CPU the count is the
same, which is what the test checks. FSDP2's and DDP's own collectives are theirs, asynchronous on a GPU, and not
counted.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.helpers.paths import PROJECT_ROOT
from tests.helpers.runs import free_port, tiny_overrides
from trainer.training.hooks import StepHook

TRAINER = str(PROJECT_ROOT / "trainer")
READS = ("item", "tolist", "__float__", "__int__", "__bool__")
COLLECTIVES = ("all_reduce", "all_gather", "all_gather_object", "broadcast", "broadcast_object_list", "barrier",
               "gather", "reduce", "scatter")
LOG_EVERY, STEPS = 3, 9


def _count_from_trainer(events: list):
    """Wrap the syncing calls so that each one made directly by trainer/ code appends (kind, where) to events."""
    def wrap(owner, name: str, kind: str) -> None:
        original = getattr(owner, name)

        def counted(*args, **kwargs):
            caller = sys._getframe(1).f_code
            if caller.co_filename.startswith(TRAINER):
                events.append((kind, f"{name} in {Path(caller.co_filename).name}:{caller.co_name}"))
            return original(*args, **kwargs)

        setattr(owner, name, counted)

    for name in READS:
        wrap(torch.Tensor, name, "read")
    for name in COLLECTIVES:
        wrap(dist, name, "collective")


class _StepMarker(StepHook):
    """A step hook: marks where each step ended in the event list."""

    def __init__(self, events: list):
        self.events = events

    def after_step(self, epoch: int, step: int, batch: dict) -> None:
        self.events.append(("step", step))


def _worker(rank: int, world: int, port: int, strategy: str, shards: str, tmp: str, queue) -> None:
    from trainer.config import load_config, to_dict
    from trainer.launch import resolve_paths
    from trainer.training.worker import make_worker, run_epoch

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    overrides = tiny_overrides(Path(shards), Path(tmp) / "runs", f"sqlite:///{tmp}/mlflow.db", "syncs")
    config = resolve_paths(load_config(None, overrides + [
        f"scaling.parallelism={strategy}", f"train.log_every_steps={LOG_EVERY}", f"train.steps_per_epoch={STEPS}",
        "train.epochs=1", "data.batch_size=8", "train.precision=fp32"]))
    worker = make_worker({"config": to_dict(config), "mlflow": {}, "stop_signal": None}, rank, world,
                         torch.device("cpu"))
    events: list = []
    worker.hooks.append(_StepMarker(events))
    worker.begin_epoch(0)
    _count_from_trainer(events)
    stopped = run_epoch(worker)
    queue.put((rank, stopped, events))
    dist.destroy_process_group()


def _intervals(events: list) -> dict[int, list]:
    """The syncing calls made after step s (until the end of step s + 1), by s; s = 0: before the first step."""
    by_step, step = {0: []}, 0
    for kind, what in events:
        if kind == "step":
            step = what
            by_step[step] = []
        else:
            by_step[step].append((kind, what))
    return by_step


@pytest.mark.parametrize("strategy", ["fsdp2", "ddp"])
def test_the_loop_syncs_once_per_logging_window_and_never_per_step(strategy, fashion_mnist_shards, tmp_path):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_worker, args=(r, 2, port, strategy, str(fashion_mnist_shards), str(tmp_path), queue))
             for r in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    for rank, stopped, events in results:
        intervals = _intervals(events)
        assert not stopped and sorted(intervals) == list(range(STEPS + 1)), (rank, sorted(intervals))
        for step, calls in intervals.items():
            logged = step > 0 and step % LOG_EVERY == 0  # the window is logged after this step
            reads = [what for kind, what in calls if kind == "read"]
            collectives = [what for kind, what in calls if kind == "collective"]
            assert len(reads) <= logged and len(collectives) <= logged, (rank, step, calls)
        assert sum(len(calls) for calls in intervals.values()) == 2 * (STEPS // LOG_EVERY)  # one of each a window
