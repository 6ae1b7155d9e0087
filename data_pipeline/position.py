"""Where a training loader stands inside an epoch, so a resumed run continues with the next batch.

A rank's DataLoader takes batches from its workers in turn (worker 0, 1, ..., then 0 again, leaving
out workers that ran dry). A position therefore records, per worker, how many of its batches (chunks
of records, counted even when a chunk yielded nothing) are done, and which worker is next in turn.
Resuming skips each worker's done chunks without rendering them and starts the turn at `next_worker`,
which gives exactly the batches, in exactly the order, that the uninterrupted epoch would have given.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class StreamPosition:
    epoch: int
    attempt: int  # the pass over the rank's shards (> 0 only after corrupt samples made a rank run short)
    batches: int  # batches this rank yielded in the epoch so far
    done_chunks: tuple[int, ...]  # per loader worker: chunks it has finished
    next_worker: int  # the worker whose batch comes next

    @classmethod
    def start(cls, epoch: int, readers: int) -> "StreamPosition":
        return cls(epoch, 0, 0, (0,) * readers, 0)

    def after(self, worker: int, chunk: int) -> "StreamPosition":
        done = list(self.done_chunks)
        done[worker] = chunk + 1
        return StreamPosition(self.epoch, self.attempt, self.batches + 1, tuple(done),
                              (worker + 1) % len(self.done_chunks))

    def to_dict(self) -> dict:
        return {**asdict(self), "done_chunks": list(self.done_chunks)}

    @classmethod
    def from_dict(cls, d: dict) -> "StreamPosition":
        return cls(int(d["epoch"]), int(d["attempt"]), int(d["batches"]), tuple(int(c) for c in d["done_chunks"]),
                   int(d["next_worker"]))


def round_robin_position(epoch: int, batches: int, worker_batches: list[int | None]) -> StreamPosition:
    """The position after `batches` batches when worker w yields `worker_batches[w]` batches (None:
    endless) and none is skipped as corrupt: what a resumed run uses when its loader layout changed."""
    readers = len(worker_batches)
    done, turn, taken = [0] * readers, 0, 0
    while taken < batches:
        live = [w for w in range(readers) if worker_batches[w] is None or done[w] < worker_batches[w]]
        if not live:
            break
        w = next((w for w in live if w >= turn), live[0])
        done[w] += 1
        taken += 1
        turn = (w + 1) % readers
    return StreamPosition(epoch, 0, taken, tuple(done), turn)
