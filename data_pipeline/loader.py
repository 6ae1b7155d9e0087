"""Streaming sequence loader: shards -> samples -> batches of M+1 transformed views with actions.

Per epoch, a rank reads its share of the shards (see `sharding`); each DataLoader worker (`stream`) reads its
share of those, shuffles in a buffer (train), batches, and renders the views itself, so the main
process only receives finished uint8 batches.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import warnings
from multiprocessing import forkserver
from typing import Callable, Iterator, Mapping

import torch
from torch.utils.data import DataLoader

from data_pipeline import sharding
from data_pipeline.datasets import composer_for, composer_modules
from data_pipeline.errors import DataError
from data_pipeline.position import StreamPosition, round_robin_position
from data_pipeline.shards import WRITE_HINT, Manifest, check_shards_present, read_manifest, select_shards, shard_urls
from data_pipeline.sources.base import Composer
from data_pipeline.storage import S3Options
from data_pipeline.stream import POSITION_KEY, SequenceStream, SkipCounter, StreamSpec, worker_init


class SequenceLoader:
    """Iterable over batch dicts for one rank; call `set_epoch` before each epoch.

    Batch (the composer's): views uint8 (B, V, C, S, S) with the prediction target last, actions
    float32 (B, V, A) absolute, rel_actions float32 (B, V-1, A) from view j to j+1, path_actions float32
    (B, V-1, A) from view 0 to view j+1, label int64 (B,), sample_keys: list of B `<shard>/<key>` names.

    A training loader's epoch restarts from its first batch on every iteration, unless `resume_from`
    gave it a position: then the next iteration continues from there (see `position`).
    Its settings are `spec` (see `build_sequence_loader`), each also readable as its own attribute
    (`loader.num_workers`, `loader.composer`, ...).
    """

    def __init__(self, spec: StreamSpec, manifest: Manifest):
        self.spec, self.manifest = spec, manifest
        # Sequences per shard and pass: a training pass draws `draws_per_sample` sequences from each sample.
        self.counts = [s.num_samples * spec.draws_per_sample for s in manifest.shards]
        self.epoch = 0
        self._position: StreamPosition | None = None  # after the last batch yielded (train)
        self._resume: StreamPosition | None = None  # where the next iteration starts, once
        self._skips = SkipCounter(spec.multiprocessing_context)

    def __getattr__(self, name: str):
        """The StreamSpec's settings as the loader's attributes (only called for names the loader itself lacks)."""
        spec = self.__dict__.get("spec")
        if spec is not None and name in StreamSpec.__dataclass_fields__:
            return getattr(spec, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

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
        return sharding.shard_order(len(self.spec.paths), self.spec.seed, self.epoch, shuffle=self.spec.train)

    def __len__(self) -> int:
        """Batches this rank yields this epoch: equal on all ranks for train (the minimum over ranks,
        so no rank waits in a collective for one that ran dry); this rank's exact count for val."""
        s = self.spec
        if s.resample_batches is not None:
            return s.resample_batches
        order = self._order()
        if not s.train:
            workers = 0 if s.worker_split == "batches" else s.num_workers  # batches: as one reader's
            return sharding.rank_batches(self.counts, order, s.rank, s.world_size, workers,
                                         s.batch_size, drop_last=False)
        return min(sharding.rank_batches(self.counts, order, r, s.world_size, s.num_workers,
                                         s.batch_size, drop_last=True) for r in range(s.world_size))

    def _dataloader(self, start: StreamPosition) -> DataLoader:
        s, order = self.spec, self._order()
        readers = 0 if s.worker_split == "batches" else s.num_workers  # batches: each reads all the rank's
        shards = [[s.paths[i] for i in w] for w in sharding.worker_shards(order, s.rank, s.world_size, readers)]
        if s.resample_batches is not None:
            shards = None
        # Val views depend on neither epoch nor attempt: every evaluation sees the same sequences.
        keys = (s.seed, 1, self.epoch, start.attempt, s.rank) if s.train else (s.seed, 0, 0, 0, s.rank)
        # Its own generator: a DataLoader otherwise draws its workers' base seed from the global torch RNG,
        # which the model's dropout also draws from, so a resumed epoch would shift the model's draws.
        return DataLoader(SequenceStream(s, self._skips, shards, keys, start), batch_size=None,
                          num_workers=s.num_workers,
                          persistent_workers=False, worker_init_fn=worker_init if s.num_workers else None,
                          generator=torch.Generator().manual_seed(s.seed), pin_memory=s.pin_memory,
                          multiprocessing_context=start_method(s.multiprocessing_context) if s.num_workers else None)

    @property
    def readers(self) -> int:
        return max(1, self.spec.num_workers)

    @property
    def position(self) -> StreamPosition:
        """Where this epoch stands after the batches yielded so far (train loaders)."""
        if self._position is None or self._position.epoch != self.epoch:
            return StreamPosition.start(self.epoch, self.readers)
        return self._position

    def resume_from(self, position: StreamPosition) -> None:
        """Make the next pass over `position.epoch` continue after its `position.batches` batches."""
        if not self.spec.train:
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
        if self.spec.resample_batches is not None:
            per_worker = [None] * self.readers
        else:
            per_worker = [sharding.worker_batches(self.counts, shards, self.spec.batch_size, drop_last=True)
                          for shards in sharding.worker_shards(self._order(), self.spec.rank, self.spec.world_size,
                                                               self.spec.num_workers)]
        return round_robin_position(epoch, batches, per_worker)

    def __iter__(self) -> Iterator[dict]:
        if not self.spec.train:
            for batch in self._dataloader(StreamPosition.start(0, self.readers)):
                batch.pop(POSITION_KEY)
                if batch:  # an empty marker: every sample of the batch was corrupt (worker_split="batches")
                    yield batch
            return
        target, position = len(self), StreamPosition.start(self.epoch, self.readers)
        if self._resume is not None and self._resume.epoch == self.epoch:
            position = self._resume
        self._resume, self._position = None, position
        while position.batches < target:
            before, fresh_pass = position.batches, not any(position.done_chunks)
            for batch in self._dataloader(position):
                position = position.after(*batch.pop(POSITION_KEY))
                self._position = position
                yield batch
                if position.batches == target:
                    return
            if position.batches == before and fresh_pass:
                raise DataError(f"rank {self.spec.rank} read no valid sample from its shards in "
                                f"{self.spec.shard_dir}; {WRITE_HINT}")
            # Only skipped corrupt samples make a rank run short; re-reading keeps all ranks in step.
            warnings.warn(f"rank {self.spec.rank} is {target - position.batches} batches short after skipping "
                          "corrupt samples; reading its shards again to keep ranks in step", RuntimeWarning,
                          stacklevel=2)
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
            raise DataError(f"{self.spec.shard_dir}: dataset_info.{key} has {len(values)} values for "
                            f"{self.channels} channels")
        return values

    @property
    def action_dim(self) -> int:
        return self.spec.composer.action_dim

    @property
    def action_groups(self) -> dict[str, list[int]]:
        return {k: list(v) for k, v in self.spec.composer.action_groups.items()}


def start_method(name: str | None):
    """The DataLoader workers' multiprocessing context (None: the platform's default)."""
    if name is None:
        return None
    context = multiprocessing.get_context(name)
    if name == "forkserver":
        _ensure_forkserver(context)
    return context


def _ensure_forkserver(context) -> None:
    """Start this process's forkserver (once) with this package preloaded, so that its workers start in milliseconds
    (a spawned one imports torch first: ~1.5 s). The server is a fresh process, safe beside Ray's threads; its
    children inherit ITS environment (the one at its start). Python < 3.13 starts it without this process's
    sys.path, so a script that put the project on sys.path would have its workers import another copy, or none:
    the path goes along in PYTHONPATH."""
    # What a worker imports anyway: the stream, torch, and the modules of the registry's composers (it unpickles
    # one). The package loads its names lazily: preloading only it would import none of them.
    context.set_forkserver_preload(["data_pipeline.loader", *composer_modules()])  # no effect once the server runs
    previous = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(path or os.getcwd() for path in sys.path)
    try:
        forkserver.ensure_running()
    finally:
        if previous is None:
            os.environ.pop("PYTHONPATH")
        else:
            os.environ["PYTHONPATH"] = previous


def build_sequence_loader(shard_dir: str, *, composer: Composer | Callable[[Manifest], Composer] | Mapping | object,
                          num_views: int,
                          batch_size: int, rank: int, world_size: int, num_workers: int, seed: int, train: bool,
                          shuffle_buffer: int = 1000, s3: S3Options | None = None,
                          resample_batches: int | None = None, shard_pattern: str | None = None,
                          worker_split: str = "shards", multiprocessing_context: str | None = None,
                          pin_memory: bool = False, render_in_loader: bool = True,
                          draws_per_sample: int = 1) -> SequenceLoader:
    """A SequenceLoader for one rank over the shard set in shard_dir (a path, file:// or s3:// URL).

    `composer` turns the set's samples into sequences (`data_pipeline.sources`): a Composer, a function of the
    manifest, or the load-time options of the dataset the manifest names (`composer_for`: its options dataclass, or
    values by name, e.g. the trainer's `data.*` values, of which the dataset takes those its options declare).
    `resample_batches` (train only): instead of splitting the shards among ranks and workers for one
    pass, every worker draws shards with replacement (seeded per rank, worker and epoch) and the
    rank yields exactly this many batches per epoch: any number of nodes, any number of shards.
    `shard_pattern`: a brace pattern naming the shards of the set to read (`shard-{000000..000009}.tar`).
    `pin_memory`: batches come in page-locked memory, for asynchronous copies to a GPU.
    `render_in_loader=False`: batches hold the composer's render inputs (sources, drawn parameters) under
    `RENDER_INPUTS` instead of views; `render_planned(loader.composer, batch, device)` renders them where they are
    used, as the same ops would have here (the trainer's `data.render_on=device`).
    `draws_per_sample` (train only): one pass reads each sample once and draws that many sequences from it (each
    with its own views), spread through the shuffle so that no batch holds one sample twice (but for a worker's
    last few batches, once fewer than a batch of samples is left to draw from): an epoch (one pass) then has that
    many times the sequences, for the same reading and decoding.
    `worker_split` (val only): "shards" (default) gives each DataLoader worker its own shards, so the order of
    the batches depends on the number of workers; "batches" has every worker read all shards and render every
    N-th batch, so the batches (views, order) are the same for any number of workers (offline evaluation).
    `multiprocessing_context`: how DataLoader workers start ("fork", "spawn", "forkserver"; None: the platform's
    default, fork on Linux). "spawn" and "forkserver" (`start_method`) are safe in a process with threads (one
    that has started Ray), where a forked child inherits locks held by threads that do not exist in it.
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
        (worker_split not in ("shards", "batches") or (worker_split == "batches" and train),
         f"worker_split must be 'shards', or 'batches' for a loader with train=False, got {worker_split!r}"),
        (draws_per_sample < 1 or (draws_per_sample > 1 and not train),
         f"draws_per_sample must be >= 1, and 1 for a loader with train=False, got {draws_per_sample}"),
        (multiprocessing_context not in (None, "fork", "spawn", "forkserver"),
         f"multiprocessing_context must be fork, spawn, forkserver or None, got {multiprocessing_context!r}"),
    ] if bad]
    if problems:
        raise DataError(f"invalid loader settings: {'; '.join(problems)}")
    manifest = read_manifest(shard_dir, s3)
    if shard_pattern is not None:
        manifest = select_shards(manifest, shard_pattern, shard_dir)
    if not hasattr(composer, "compose"):
        composer = composer(manifest) if callable(composer) else composer_for(manifest, composer)
    check_shards_present(shard_dir, manifest, s3)  # here, not later inside a DataLoader worker's traceback
    shard_readers = 1 if worker_split == "batches" else max(1, num_workers)  # per rank
    readers = world_size * shard_readers
    if resample_batches is None and len(manifest.shards) < readers:
        largest = max((s.num_samples for s in manifest.shards), default=0)
        raise DataError(f"{shard_dir} has {len(manifest.shards)} shards but {world_size} ranks x {shard_readers} "
                        f"loader workers need at least {readers}; rewrite the shards with a smaller samples_per_shard "
                        f"(now up to {largest}) or use fewer loader workers")
    spec = StreamSpec(shard_dir, tuple(shard_urls(shard_dir, manifest)), composer, num_views=num_views,
                      batch_size=batch_size, rank=rank, world_size=world_size, num_workers=num_workers, seed=seed,
                      train=train, shuffle_buffer=shuffle_buffer, s3=s3, resample_batches=resample_batches,
                      worker_split=worker_split, multiprocessing_context=multiprocessing_context, pin_memory=pin_memory,
                      render_in_loader=render_in_loader, draws_per_sample=draws_per_sample)
    loader = SequenceLoader(spec, manifest)
    if train and len(loader) == 0:
        raise DataError(f"{shard_dir}: some rank's loader workers hold fewer than batch_size={batch_size} samples "
                        "each, so training would take no step; lower the batch size or the loader workers")
    return loader
