"""What each DataLoader worker runs: read its shards, shuffle (train), batch, render the views.

`SequenceLoader` (loader.py) builds one `SequenceStream` per epoch from its `StreamSpec` (the loader's settings,
frozen) and that epoch's plan; the batches carry where they came from (`POSITION_KEY`: worker, chunk) so the
loader can track its position for an exact resume. This module knows nothing of the loader.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import multiprocessing
import random
import warnings
from dataclasses import dataclass
from typing import Iterable, Iterator

import torch
from torch.utils.data import IterableDataset, get_worker_info

from data_pipeline import sharding, storage
from data_pipeline.errors import DataError, NotFound
from data_pipeline.position import StreamPosition
from data_pipeline.shards import WRITE_HINT
from data_pipeline.sources.base import Composer
from data_pipeline.storage import S3Options
from data_pipeline.tar_samples import tar_samples


@dataclass(frozen=True)
class StreamSpec:
    """One rank's loader settings, fixed when it is built (`build_sequence_loader` documents each); what every
    epoch's `SequenceStream` reads them from, pickled into the DataLoader workers with it."""

    shard_dir: str
    paths: tuple[str, ...]  # every shard of the set (or of the selected shards), manifest order
    composer: Composer
    num_views: int
    batch_size: int
    rank: int
    world_size: int
    num_workers: int
    seed: int
    train: bool
    shuffle_buffer: int = 1000
    s3: S3Options | None = None
    resample_batches: int | None = None
    worker_split: str = "shards"
    multiprocessing_context: str | None = None
    pin_memory: bool = False
    render_in_loader: bool = True  # False: batches carry their render inputs (`plan`), rendered where they are used
    draws_per_sample: int = 1  # train: sequences drawn from each sample read (`_redrawn_shuffle`)


class SkipCounter:
    """Counts skipped corrupt samples across worker processes (a shared integer) and warns.

    `context`: the multiprocessing start method of the workers that share it (its lock must come from it)."""

    def __init__(self, context: str | None = None):
        self._value = multiprocessing.get_context(context).Value("q", 0)

    @property
    def count(self) -> int:
        return self._value.value

    def skip(self, where: str, err: BaseException) -> None:
        with self._value.get_lock():
            self._value.value += 1
        warnings.warn(f"skipping corrupt data in {where}: {err}", RuntimeWarning, stacklevel=2)


class _NotCounted:
    def skip(self, where: str, err: BaseException) -> None:
        """Seen, and counted by another worker."""


_NOT_COUNTED = _NotCounted()


def read_samples(paths: Iterable[str], store, composer: Composer, skips: SkipCounter,
                  max_barren_shards: int | None = None) -> Iterator[tuple[str, object]]:
    """(sample key, decoded record) of the shards in order, skipping (and counting) corrupt ones.
    The key, `<shard file>/<sample key>`, names the sample in `batch["sample_keys"]`.

    `max_barren_shards`: give up (DataError) after that many shards in a row without one valid
    record, so an endless stream of drawn shards cannot spin forever on a broken set."""
    barren = 0
    for path in paths:
        if max_barren_shards is not None and barren >= max_barren_shards:
            raise DataError(f"{barren} shards in a row held no valid sample (last: {path}); {WRITE_HINT}")
        barren += 1
        for key, sample in read_raw_samples(path, store, skips):
            record = decode_or_skip(composer, sample, skips)
            if record is not None:
                barren = 0
                yield key, record


def read_raw_samples(path: str, store, skips: SkipCounter) -> Iterator[tuple[str, dict]]:
    """(sample key, undecoded sample) of one shard; a broken tar skips (and counts) the rest of the shard."""
    try:
        stream = store.open(path)
    except DataError as err:
        hint = f"; {WRITE_HINT}" if isinstance(err, NotFound) else ""  # an outage is not the shards' fault
        raise DataError(f"shard listed in the manifest is unreadable: {err}{hint}") from None

    name = path.rsplit("/", 1)[-1]
    with stream:
        try:
            for sample in tar_samples(stream, path):
                yield f"{name}/{sample['__key__']}", sample
        except DataError:  # the store failed for good (retries spent): not corrupt data
            raise
        except Exception as err:  # noqa: BLE001 - a damaged tar (or bytes that are no tar): skip the rest of it
            skips.skip(path, err)


def decode_or_skip(composer: Composer, sample: dict, skips: SkipCounter):
    """The decoded record, or None after counting the sample as corrupt."""
    try:
        return composer.decode(sample)
    except Exception as err:  # noqa: BLE001 - any decoding failure (PIL raises several kinds): corrupt
        skips.skip(f"sample {sample.get('__key__')} of {sample.get('__url__')}", err)
        return None


def _shuffled(items: Iterable, buffer_size: int, rng: random.Random) -> Iterator:
    """Streaming shuffle: hold up to buffer_size items and emit a random one as each new one arrives."""
    buffer = []
    for item in items:
        buffer.append(item)
        if len(buffer) >= buffer_size:
            i = rng.randrange(len(buffer))
            buffer[i], buffer[-1] = buffer[-1], buffer[i]
            yield buffer.pop()
    rng.shuffle(buffer)
    yield from buffer


def _redrawn_shuffle(items: Iterable[tuple[str, object]], buffer_size: int, draws: int, spacing: int,
                     rng: random.Random) -> Iterator[tuple[str, object]]:
    """Streaming shuffle that emits every (key, record) `draws` times, as (`key#d`, record), d = 0..draws-1: one
    read and decode of a sample serves that many sequences (each composed with its own random draws). After each
    emission a record waits out `spacing` emissions before it may be drawn again, so a batch of `spacing`
    consecutive sequences never holds one sample twice, except in the last `draws` batches of a stream, once fewer
    than `spacing` samples are left to draw from."""
    buffer: list[tuple[str, object, int]] = []
    cooling: collections.deque = collections.deque()  # (emissions at which it may return, key, record, next draw)
    emitted = 0

    def emit() -> tuple[str, object]:
        nonlocal emitted
        if not buffer:  # only while draining the end of the stream
            buffer.append(cooling.popleft()[1:])
        i = rng.randrange(len(buffer))
        buffer[i], buffer[-1] = buffer[-1], buffer[i]
        key, record, draw = buffer.pop()
        emitted += 1
        if draw + 1 < draws:
            cooling.append((emitted + spacing - 1, key, record, draw + 1))
        while cooling and cooling[0][0] <= emitted:
            buffer.append(cooling.popleft()[1:])
        return f"{key}#{draw}", record

    for key, record in items:
        buffer.append((key, record, 0))
        while len(buffer) >= buffer_size:
            yield emit()
    while buffer or cooling:
        yield emit()


def _batched(items: Iterable, size: int, drop_last: bool) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch and not drop_last:
        yield batch


@contextlib.contextmanager
def _one_thread():
    """Run the tiny batch ops single-threaded: splitting them costs more than it saves (measured:
    with num_workers=0 on 2 busy cores, cos/sin of 256 values took 3 ms each and rendering 5x
    longer with 2 threads). Restored before the batch is yielded: the trainer's setting stands."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# The (worker, chunk) a batch came from: read and removed by SequenceLoader to track its position.
POSITION_KEY = "_stream_position"


def worker_init(_worker_id: int) -> None:
    torch.set_num_threads(1)  # workers render small batches; N workers x N threads would oversubscribe


class SequenceStream(IterableDataset):
    """One epoch (one pass) of one rank: each DataLoader worker yields the batches of its shards.

    Worker ids are rotated by `start.next_worker`, so the DataLoader's turn (physical worker 0
    first) begins with the worker whose batch is next; each worker skips its `start.done_chunks`.
    With `worker_split="batches"` (see `_every_nth_batch`) the workers share the batches, not the shards.
    """

    def __init__(self, spec: StreamSpec, skips: SkipCounter, shards_per_worker: list[list[str]] | None,
                 seed_keys: tuple[int, ...], start: StreamPosition):
        self.spec, self.skips = spec, skips  # skips: counts the corrupt samples of all the loader's streams
        self.shards_per_worker = shards_per_worker  # None: every worker draws shards with replacement, forever
        self.seed_keys = seed_keys  # (seed, train, epoch, attempt, rank): with the worker id, fixes all randomness
        self.start = start
        self.split_batches = spec.worker_split == "batches"

    def __iter__(self) -> Iterator[dict]:
        worker = get_worker_info()
        readers = len(self.start.done_chunks)
        wid = ((worker.id if worker is not None else 0) + self.start.next_worker) % readers
        if self.split_batches:
            yield from self._every_nth_batch(wid, readers)
            return
        barren_limit = None
        if self.shards_per_worker is None:  # resampling: the loader stops this stream after its epoch's batches
            draw = random.Random(sharding.derive_seed(*self.seed_keys, wid, sharding.SHARD_ORDER))
            paths = (self.spec.paths[draw.randrange(len(self.spec.paths))] for _ in itertools.count())
            barren_limit = 3 * len(self.spec.paths)
        else:
            paths = self.shards_per_worker[wid]
        records = read_samples(paths, storage.store_for(self.spec.shard_dir, self.spec.s3), self.spec.composer,
                               self.skips, barren_limit)
        if self.spec.train:
            rng = random.Random(sharding.derive_seed(*self.seed_keys, wid, sharding.SHUFFLE))
            if self.spec.draws_per_sample > 1:
                records = _redrawn_shuffle(records, self.spec.shuffle_buffer, self.spec.draws_per_sample,
                                           self.spec.batch_size, rng)
            else:
                records = _shuffled(records, self.spec.shuffle_buffer, rng)
        for chunk_index, chunk in enumerate(_batched(records, self.spec.batch_size, drop_last=self.spec.train)):
            if chunk_index < self.start.done_chunks[wid]:
                continue  # done before the resume: read (to keep the shuffle in step) but not rendered
            # One generator per chunk: a chunk's views do not depend on whether earlier chunks were rendered.
            generator = torch.Generator().manual_seed(
                sharding.derive_seed(*self.seed_keys, wid, sharding.VIEWS, chunk_index))
            with _one_thread():
                batch = self._compose(chunk, generator)
            if batch is not None:
                batch[POSITION_KEY] = (wid, chunk_index)
                yield batch

    def _every_nth_batch(self, wid: int, readers: int) -> Iterator[dict]:
        """Every worker reads all of the rank's shards undecoded and batches them as one reader would; worker
        `wid` decodes and renders batches wid, wid + readers, ... with views seeded by the batch's index alone.
        The DataLoader takes the workers' batches in turn, so the batches and their order are the same for any
        number of workers (0 included). Reading is replicated (a few % of a batch's cost: decoding and rendering
        dominate); a corrupt sample leaves its batch smaller instead of shifting the later ones. A batch whose
        every sample is corrupt is an empty marker, so that the turn stays in step; the loader drops it."""
        store = storage.store_for(self.spec.shard_dir, self.spec.s3)
        tar_skips = self.skips if wid == 0 else _NOT_COUNTED  # every worker meets a broken tar: one counts it
        raw = (item for path in self.shards_per_worker[0] for item in read_raw_samples(path, store, tar_skips))
        for chunk_index, chunk in enumerate(_batched(raw, self.spec.batch_size, drop_last=False)):
            if chunk_index % readers != wid:
                continue
            decoded = [(key, decode_or_skip(self.spec.composer, sample, self.skips)) for key, sample in chunk]
            decoded = [(key, record) for key, record in decoded if record is not None]
            generator = torch.Generator().manual_seed(
                sharding.derive_seed(*self.seed_keys, 0, sharding.VIEWS, chunk_index))
            with _one_thread():
                batch = self._compose(decoded, generator) if decoded else None
            yield {**(batch or {}), POSITION_KEY: (wid, chunk_index)}

    def _compose(self, chunk: list, generator: torch.Generator) -> dict | None:
        """The chunk's batch; a record that only fails here (e.g. a view that does not decode) is skipped,
        counted, and the batch is composed from the others (None if none is left)."""
        composer = self.spec.composer
        make = composer.compose if self.spec.render_in_loader else composer.plan
        state = generator.get_state()
        try:
            return self._with_keys(make([r for _, r in chunk], self.spec.num_views, generator), chunk)
        except Exception:  # noqa: BLE001 - find the culprits one by one, then go on without them
            generator.set_state(state)
        good = []
        for index, (key, record) in enumerate(chunk):
            try:
                make([record], self.spec.num_views, torch.Generator().manual_seed(index))
                good.append((key, record))
            except Exception as err:  # noqa: BLE001
                self.skips.skip(f"sample {key} ({type(composer).__name__}.{make.__name__})", err)
        if not good:
            return None
        return self._with_keys(make([r for _, r in good], self.spec.num_views, generator), good)

    @staticmethod
    def _with_keys(batch: dict, chunk: list) -> dict:
        batch["sample_keys"] = [key for key, _ in chunk]
        return batch
