"""SIGTERM to the driver (a preemption notice, `ray job stop`) becomes a checkpoint, then a clean exit.

The driver's handler flips a flag in a small Ray actor; every step, rank 0 reads it (at most once a
second) and all ranks agree on it with one tiny all-reduce, so they stop after the same step, write
a checkpoint together and return. Running the same command again resumes from that checkpoint.
"""

from __future__ import annotations

import _thread
import contextlib
import signal
import sys
import threading
import time
from dataclasses import dataclass

import ray
import torch
import torch.distributed as dist


@ray.remote(num_cpus=0)
class StopSignal:
    def __init__(self):
        self.requested_at: float | None = None

    def request(self) -> None:
        self.requested_at = self.requested_at or time.time()

    def requested(self) -> bool:
        return self.requested_at is not None


@dataclass
class SigtermWatch:
    handle: object  # the StopSignal actor the workers poll
    received: bool = False

    def run(self, fit):
        """`fit()` in a helper thread, so the main thread stays free to take signals at once (inside a
        blocking ray.get it would notice them only seconds later)."""
        outcome = {}

        def target():
            try:
                outcome["result"] = fit()
            except BaseException as err:  # noqa: BLE001 - handed over to the main thread
                outcome["error"] = err

        thread = threading.Thread(target=target, name="trainer-fit", daemon=True)
        thread.start()
        while thread.is_alive():
            thread.join(0.2)
        if "error" in outcome:
            raise outcome["error"]
        return outcome["result"]


@contextlib.contextmanager
def stop_on_sigterm(grace_s: float):
    """While the block runs, SIGTERM asks the workers to checkpoint and return; if they have not within
    `grace_s` seconds, the main thread gets a KeyboardInterrupt (Ray Train then stops the workers)."""
    watch = SigtermWatch(StopSignal.remote())

    def ask_then_wait() -> None:
        ray.get(watch.handle.request.remote())
        time.sleep(grace_s)
        _thread.interrupt_main()

    def on_sigterm(signum, frame):
        if not watch.received:
            watch.received = True
            print("[seq-jepa] SIGTERM: the workers write a checkpoint at their current step, then stop",
                  file=sys.stderr, flush=True)
            # Not from inside the handler: the main thread may be inside a blocking ray.get.
            threading.Thread(target=ask_then_wait, daemon=True).start()

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield watch
    finally:
        signal.signal(signal.SIGTERM, previous)


class StopCheck:
    """Worker side: `should_stop()` is True on every rank after the same step once a stop was requested."""

    def __init__(self, handle, rank: int, device: torch.device, poll_every_s: float = 0.2):
        self.handle, self.rank, self.device, self.poll_every_s = handle, rank, device, poll_every_s
        self._last_poll, self._requested = 0.0, False

    def should_stop(self) -> bool:
        if self.handle is None:
            return False
        if self.rank == 0 and not self._requested and time.monotonic() - self._last_poll >= self.poll_every_s:
            self._last_poll = time.monotonic()
            self._requested = ray.get(self.handle.requested.remote())
        flag = torch.tensor([1.0 if self._requested else 0.0], device=self.device)
        if dist.is_initialized():
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())
