"""SIGTERM to the driver (a preemption notice, `ray job stop`) becomes a checkpoint, then a clean exit.

The driver's handler flips a flag in a small Ray actor; at every logged step rank 0 reads it (at most
every 0.2 s) and all ranks learn it through that step's all-reduce of the logged metrics (no collective
of its own), so they stop after the same step, write a checkpoint together and return. Running the same
command again resumes from that checkpoint.
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
    """Worker side: rank 0's view of the stop request, which the logging window's all-reduce shares (summed over
    the ranks, it is > 0 on every rank after the same step once a stop was requested)."""

    def __init__(self, handle, rank: int, poll_every_s: float = 0.2):
        self.handle, self.rank, self.poll_every_s = handle, rank, poll_every_s
        self._last_poll, self._requested = 0.0, False

    def local_request(self) -> float:
        """1.0 once rank 0 has seen a stop request, else 0.0 (a host call to the actor, no device work)."""
        if self.handle is None or self.rank != 0:
            return 0.0
        if not self._requested and time.monotonic() - self._last_poll >= self.poll_every_s:
            self._last_poll = time.monotonic()
            self._requested = ray.get(self.handle.requested.remote())
        return 1.0 if self._requested else 0.0
