"""Streaming sequence loader: shards -> samples -> batches of M+1 transformed views with actions.

Per epoch, a rank reads its share of the shards (see `sharding`); each DataLoader worker reads its
share of those, shuffles in a buffer (train), batches, and renders the views itself, so the main
process only receives finished uint8 batches.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import random
import warnings
from typing import Callable, Iterable, Iterator

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from webdataset.tariterators import group_by_keys, tar_file_expander

from data_pipeline import sharding, storage
from data_pipeline.errors import DataError
from data_pipeline.position import StreamPosition, round_robin_position
from data_pipeline.shards import WRITE_HINT, Manifest, check_shards_present, read_manifest, select_shards, shard_urls
from data_pipeline.sources.base import Composer
from data_pipeline.storage import NotFound, S3Options


class _SkipCounter:
    """Counts skipped corrupt samples across worker processes (a shared integer) and warns."""

    def __init__(self):
        self._value = multiprocessing.Value("q", 0)

    @property
    def count(self) -> int:
        return self._value.value

    def skip(self, where: str, err: BaseException) -> None:
        with self._value.get_lock():
            self._value.value += 1
        warnings.warn(f"skipping corrupt data in {where}: {err}", RuntimeWarning, stacklevel=2)


def _read_samples(paths: Iterable[str], store, composer: Composer, skips: _SkipCounter,
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
        try:
            stream = store.open(path)
        except DataError as err:
            hint = f"; {WRITE_HINT}" if isinstance(err, NotFound) else ""  # an outage is not the shards' fault
            raise DataError(f"shard listed in the manifest is unreadable: {err}{hint}") from None

        def unreadable(err: Exception, path=path) -> bool:  # a broken tar: skip the rest of this shard
            if isinstance(err, DataError):  # the store failed for good (retries spent): not corrupt data
                raise err
            skips.skip(path, err)
            return True

        with stream:
            files = tar_file_expander([{"url": path, "stream": stream}], handler=unreadable)
            for sample in group_by_keys(files, handler=unreadable):
                try:
                    record = composer.decode(sample)
                    barren = 0
                    yield f"{path.rsplit('/', 1)[-1]}/{sample.get('__key__')}", record
                except Exception as err:  # any decoding failure (PIL raises several kinds) = corrupt sample
                    skips.skip(f"sample {sample.get('__key__')} of {path}", err)


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
_WHERE = "_stream_position"


def _worker_init(_worker_id: int) -> None:
    torch.set_num_threads(1)  # workers render small batches; N workers x N threads would oversubscribe


class _SequenceStream(IterableDataset):
    """One epoch (one pass) of one rank: each DataLoader worker yields the batches of its shards.

    Worker ids are rotated by `start.next_worker`, so the DataLoader's turn (physical worker 0
    first) begins with the worker whose batch is next; each worker skips its `start.done_chunks`.
    """

    def __init__(self, loader: "SequenceLoader", shards_per_worker: list[list[str]] | None,
                 seed_keys: tuple[int, ...], start: StreamPosition):
        self.shards_per_worker = shards_per_worker  # None: every worker draws shards with replacement, forever
        self.all_paths, self.shard_dir = loader.paths, loader.shard_dir
        self.seed_keys = seed_keys  # (seed, train, epoch, attempt, rank): with the worker id, fixes all randomness
        self.start = start
        self.composer, self.num_views = loader.composer, loader.num_views
        self.batch_size, self.train, self.shuffle_buffer = loader.batch_size, loader.train, loader.shuffle_buffer
        self.skips = loader._skips
        self.s3 = loader.s3

    def __iter__(self) -> Iterator[dict]:
        worker = get_worker_info()
        readers = len(self.start.done_chunks)
        wid = ((worker.id if worker is not None else 0) + self.start.next_worker) % readers
        barren_limit = None
        if self.shards_per_worker is None:  # resampling: the loader stops this stream after its epoch's batches
            draw = random.Random(sharding.derive_seed(*self.seed_keys, wid, sharding.SHARD_ORDER))
            paths = (self.all_paths[draw.randrange(len(self.all_paths))] for _ in itertools.count())
            barren_limit = 3 * len(self.all_paths)
        else:
            paths = self.shards_per_worker[wid]
        records = _read_samples(paths, storage.store_for(self.shard_dir, self.s3), self.composer, self.skips,
                                barren_limit)
        if self.train:
            rng = random.Random(sharding.derive_seed(*self.seed_keys, wid, sharding.SHUFFLE))
            records = _shuffled(records, self.shuffle_buffer, rng)
        for chunk_index, chunk in enumerate(_batched(records, self.batch_size, drop_last=self.train)):
            if chunk_index < self.start.done_chunks[wid]:
                continue  # done before the resume: read (to keep the shuffle in step) but not rendered
            # One generator per chunk: a chunk's views do not depend on whether earlier chunks were rendered.
            generator = torch.Generator().manual_seed(
                sharding.derive_seed(*self.seed_keys, wid, sharding.VIEWS, chunk_index))
            with _one_thread():
                batch = self._compose(chunk, generator)
            if batch is not None:
                batch[_WHERE] = (wid, chunk_index)
                yield batch

    def _compose(self, chunk: list, generator: torch.Generator) -> dict | None:
        """The chunk's batch; a record that only fails here (e.g. a view that does not decode) is skipped,
        counted, and the batch is composed from the others (None if none is left)."""
        state = generator.get_state()
        try:
            return self._with_keys(self.composer.compose([r for _, r in chunk], self.num_views, generator), chunk)
        except Exception:  # noqa: BLE001 - find the culprits one by one, then go on without them
            generator.set_state(state)
        good = []
        for index, (key, record) in enumerate(chunk):
            try:
                self.composer.compose([record], self.num_views, torch.Generator().manual_seed(index))
                good.append((key, record))
            except Exception as err:  # noqa: BLE001
                self.skips.skip(f"sample {key} ({type(self.composer).__name__}.compose)", err)
        if not good:
            return None
        return self._with_keys(self.composer.compose([r for _, r in good], self.num_views, generator), good)

    @staticmethod
    def _with_keys(batch: dict, chunk: list) -> dict:
        batch["sample_keys"] = [key for key, _ in chunk]
        return batch


class SequenceLoader:
    """Iterable over batch dicts for one rank; call `set_epoch` before each epoch.

    Batch (the composer's): views uint8 (B, V, C, S, S) with the prediction target last, actions
    float32 (B, V, A) absolute, rel_actions float32 (B, V-1, A) from view j to j+1, path_actions float32
    (B, V-1, A) from view 0 to view j+1, label int64 (B,), sample_keys: list of B `<shard>/<key>` names.

    A training loader's epoch restarts from its first batch on every iteration, unless `resume_from`
    gave it a position: then the next iteration continues from there (see `position`).
    """

    def __init__(self, shard_dir: str, manifest: Manifest, *, composer: Composer, num_views: int, batch_size: int,
                 rank: int, world_size: int, num_workers: int, seed: int, train: bool, shuffle_buffer: int,
                 s3: S3Options | None = None, resample_batches: int | None = None):
        self.shard_dir, self.manifest, self.s3, self.composer = shard_dir, manifest, s3, composer
        self.resample_batches = resample_batches  # train only: draw shards with replacement, this many batches
        self.paths = shard_urls(shard_dir, manifest)
        self.counts = [s.num_samples for s in manifest.shards]
        self.num_views, self.batch_size, self.rank, self.world_size = num_views, batch_size, rank, world_size
        self.num_workers, self.seed = num_workers, seed
        self.train, self.shuffle_buffer = train, shuffle_buffer
        self.epoch = 0
        self._position: StreamPosition | None = None  # after the last batch yielded (train)
        self._resume: StreamPosition | None = None  # where the next iteration starts, once
        self._skips = _SkipCounter()

    def set_epoch(self, epoch: int) -> None:
        """Selects the epoch's shard order and random streams (train); val ignores it."""
        if epoch < 0:
            raise DataError(f"epoch must be >= 0, got {epoch}")
        self.epoch = epoch

    @property
    def corrupt_samples(self) -> int:
        """Samples skipped as corrupt so far (all epochs, all workers of this loader)."""
        return self._skips.count

    def _order(self) -> list[int]:
        return sharding.shard_order(len(self.paths), self.seed, self.epoch, shuffle=self.train)

    def __len__(self) -> int:
        """Batches this rank yields this epoch: equal on all ranks for train (the minimum over ranks,
        so no rank waits in a collective for one that ran dry); this rank's exact count for val."""
        if self.resample_batches is not None:
            return self.resample_batches
        order = self._order()
        if not self.train:
            return sharding.rank_batches(self.counts, order, self.rank, self.world_size, self.num_workers,
                                         self.batch_size, drop_last=False)
        return min(sharding.rank_batches(self.counts, order, r, self.world_size, self.num_workers,
                                         self.batch_size, drop_last=True) for r in range(self.world_size))

    def _dataloader(self, start: StreamPosition) -> DataLoader:
        order = self._order()
        shards = [[self.paths[i] for i in w] for w in sharding.worker_shards(order, self.rank, self.world_size,
                                                                               self.num_workers)]
        if self.resample_batches is not None:
            shards = None
        # Val views depend on neither epoch nor attempt: every evaluation sees the same sequences.
        keys = (self.seed, 1, self.epoch, start.attempt, self.rank) if self.train else (self.seed, 0, 0, 0, self.rank)
        # Its own generator: a DataLoader otherwise draws its workers' base seed from the global torch RNG,
        # which the model's dropout also draws from, so a resumed epoch would shift the model's draws.
        return DataLoader(_SequenceStream(self, shards, keys, start), batch_size=None, num_workers=self.num_workers,
                          persistent_workers=False, worker_init_fn=_worker_init if self.num_workers else None,
                          generator=torch.Generator().manual_seed(self.seed))

    @property
    def readers(self) -> int:
        return max(1, self.num_workers)

    @property
    def position(self) -> StreamPosition:
        """Where this epoch stands after the batches yielded so far (train loaders)."""
        if self._position is None or self._position.epoch != self.epoch:
            return StreamPosition.start(self.epoch, self.readers)
        return self._position

    def resume_from(self, position: StreamPosition) -> None:
        """Make the next pass over `position.epoch` continue after its `position.batches` batches."""
        if not self.train:
            raise DataError("only a training loader resumes mid-epoch")
        if len(position.done_chunks) != self.readers:
            raise DataError(f"the position was taken with {len(position.done_chunks)} loader workers, this loader has "
                            f"{self.readers}; use `position_after` for a changed layout")
        self.set_epoch(position.epoch)
        self._resume = position

    def position_after(self, epoch: int, batches: int) -> StreamPosition:
        """The position after `batches` batches of `epoch` of this loader's layout, were none skipped as
        corrupt: where a run resumed with another layout (workers, loader workers) continues the epoch."""
        self.set_epoch(epoch)
        if self.resample_batches is not None:
            per_worker = [None] * self.readers
        else:
            per_worker = [sharding.worker_batches(self.counts, shards, self.batch_size, drop_last=True)
                          for shards in sharding.worker_shards(self._order(), self.rank, self.world_size,
                                                               self.num_workers)]
        return round_robin_position(epoch, batches, per_worker)

    def __iter__(self) -> Iterator[dict]:
        if not self.train:
            for batch in self._dataloader(StreamPosition.start(0, self.readers)):
                batch.pop(_WHERE)
                yield batch
            return
        target, position = len(self), StreamPosition.start(self.epoch, self.readers)
        if self._resume is not None and self._resume.epoch == self.epoch:
            position = self._resume
        self._resume, self._position = None, position
        while position.batches < target:
            before, fresh_pass = position.batches, not any(position.done_chunks)
            for batch in self._dataloader(position):
                position = position.after(*batch.pop(_WHERE))
                self._position = position
                yield batch
                if position.batches == target:
                    return
            if position.batches == before and fresh_pass:
                raise DataError(f"rank {self.rank} read no valid sample from its shards in {self.shard_dir}; "
                                f"{WRITE_HINT}")
            # Only skipped corrupt samples make a rank run short; re-reading keeps all ranks in step.
            warnings.warn(f"rank {self.rank} is {target - position.batches} batches short after skipping corrupt "
                          "samples; reading its shards again to keep ranks in step", RuntimeWarning, stacklevel=2)
            position = StreamPosition(self.epoch, position.attempt + 1, position.batches, (0,) * self.readers, 0)
            self._position = position

    @property
    def num_classes(self) -> int:
        return int(self.manifest.dataset_info["num_classes"])

    @property
    def channels(self) -> int:
        return int(self.manifest.dataset_info["channels"])

    @property
    def mean(self) -> list[float]:
        """Per-channel mean of [0, 1] intensities (a manifest may hold one number for all channels)."""
        return self._per_channel("mean")

    @property
    def std(self) -> list[float]:
        return self._per_channel("std")

    def _per_channel(self, key: str) -> list[float]:
        value = self.manifest.dataset_info[key]
        values = [float(v) for v in value] if isinstance(value, (list, tuple)) else [float(value)] * self.channels
        if len(values) != self.channels:
            raise DataError(f"{self.shard_dir}: dataset_info.{key} has {len(values)} values for "
                            f"{self.channels} channels")
        return values

    @property
    def action_dim(self) -> int:
        return self.composer.action_dim

    @property
    def action_groups(self) -> dict[str, list[int]]:
        return {k: list(v) for k, v in self.composer.action_groups.items()}

def build_sequence_loader(shard_dir: str, *, composer: Composer | Callable[[Manifest], Composer], num_views: int,
                          batch_size: int, rank: int, world_size: int, num_workers: int, seed: int, train: bool,
                          shuffle_buffer: int = 1000, s3: S3Options | None = None,
                          resample_batches: int | None = None, shard_pattern: str | None = None) -> SequenceLoader:
    """A SequenceLoader for one rank over the shard set in shard_dir (a path, file:// or s3:// URL).

    `composer` turns the set's samples into sequences (`data_pipeline.sources`); pass a function of
    the manifest to build one that depends on the stored data (its geometry, its dataset).
    `resample_batches` (train only): instead of splitting the shards among ranks and workers for one
    pass, every worker draws shards with replacement (seeded per rank, worker and epoch) and the
    rank yields exactly this many batches per epoch: any number of nodes, any number of shards.
    `shard_pattern`: a brace pattern naming the shards of the set to read (`shard-{000000..000009}.tar`).
    """
    problems = [msg for bad, msg in [
        (num_views < 2, f"num_views must be >= 2 (M observed views + 1 target), got {num_views}"),
        (batch_size < 1, f"batch_size must be >= 1, got {batch_size}"),
        (not 0 <= rank < world_size, f"need 0 <= rank < world_size, got rank {rank}, world_size {world_size}"),
        (num_workers < 0, f"num_workers must be >= 0, got {num_workers}"),
        (seed < 0, f"seed must be >= 0, got {seed}"),
        (shuffle_buffer < 1, f"shuffle_buffer must be >= 1, got {shuffle_buffer}"),
        (resample_batches is not None and (not train or resample_batches < 1),
         f"resample_batches must be >= 1 and for a training loader, got {resample_batches} (train={train})"),
    ] if bad]
    if problems:
        raise DataError(f"invalid loader settings: {'; '.join(problems)}")
    manifest = read_manifest(shard_dir, s3)
    if shard_pattern is not None:
        manifest = select_shards(manifest, shard_pattern, shard_dir)
    if not hasattr(composer, "compose"):
        composer = composer(manifest)
    check_shards_present(shard_dir, manifest, s3)  # here, not later inside a DataLoader worker's traceback
    readers = world_size * max(1, num_workers)
    if resample_batches is None and len(manifest.shards) < readers:
        raise DataError(f"{shard_dir} has {len(manifest.shards)} shards but {world_size} ranks x {max(1, num_workers)} "
                        f"loader workers need at least {readers}; rewrite the shards with a smaller samples_per_shard "
                        f"(now up to {max((s.num_samples for s in manifest.shards), default=0)}) or use fewer loader workers")
    loader = SequenceLoader(shard_dir, manifest, composer=composer, num_views=num_views, batch_size=batch_size,
                            rank=rank, world_size=world_size, num_workers=num_workers, seed=seed, train=train,
                            shuffle_buffer=shuffle_buffer, s3=s3, resample_batches=resample_batches)
    if train and len(loader) == 0:
        raise DataError(f"{shard_dir}: some rank's loader workers hold fewer than batch_size={batch_size} samples "
                        "each, so training would take no step; lower the batch size or the loader workers")
    return loader
