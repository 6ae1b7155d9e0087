"""The trainer's side of the data contract: loaders from the config, normalisation on the device."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Iterable, Iterator

import torch

from data_pipeline import (
    RENDER_INPUTS,
    S3Options,
    SequenceLoader,
    build_sequence_loader,
    load_option_names,
    render_planned,
)
from trainer.config import Config


def s3_options(config: Config) -> S3Options:
    d = config.data
    return S3Options(endpoint_url=d.s3_endpoint_url, region=d.s3_region, profile=d.s3_profile)


def resolve_shards(shards: str) -> str:
    """Absolute location of the shard root; resolved on the driver (Ray workers change directory)."""
    if "://" in shards and not shards.startswith("file://"):
        return shards
    path = shards[len("file://"):] if shards.startswith("file://") else shards
    return str(Path(os.path.expanduser(path)).resolve())


def renders_on_device(config: Config) -> bool:
    """Whether the training process renders the views (`data.render_on`; auto: where the workers have GPUs)."""
    return config.data.render_on == "device" or (config.data.render_on == "auto" and config.scaling.use_gpu)


def build_loader(config: Config, split: str, rank: int, world_size: int) -> SequenceLoader:
    """The training loader (train split: shuffled, fresh views every epoch) or the validation one."""
    train = split == "train"
    seq_len = config.model.seq_len if train else config.eval_seq_len
    batch = config.data.batch_size if train else config.data.val_batch_size
    folder = config.data.train_split if train else split
    return _loader(config, folder, seq_len + 1, batch // world_size, rank, world_size, train,
                   resample_batches=config.train.steps_per_epoch if train and config.data.resample else None,
                   shard_pattern=config.data.train_shards if train else None, pin_memory=config.scaling.use_gpu,
                   render_in_loader=not renders_on_device(config),
                   draws_per_sample=config.data.draws_per_sample if train else 1)


def build_frozen_view_loader(config: Config, split: str, num_views: int) -> SequenceLoader:
    """A whole split in order, with views fixed by the seed (offline evaluation), rendered by
    `eval_loader_workers(config)` processes.

    The workers come from a forkserver, not forked from this process: evaluation may run in a driver that has
    started Ray, and forking from a process with Ray's threads crashed there (a double free in the forked
    child); spawning would work too, but costs ~1.5 s per worker and split. They share the batches, not the
    shards, so the batches (views and order) are the same for any number of workers.
    """
    workers = eval_loader_workers(config)
    return _loader(config, split, num_views, config.data.val_batch_size, 0, 1, train=False, num_workers=workers,
                   worker_split="batches", multiprocessing_context="forkserver" if workers else None)


def eval_loader_workers(config: Config) -> int:
    """`eval.loader_workers`, or (None) with a GPU the cores this process may use, up to 4 (in a Ray task or actor,
    a sweep trial's evaluation, the CPUs Ray assigned it); on a CPU none: there the model takes ~99 % of an
    extraction and the same cores, so rendering in this process is faster (measured: README, speed)."""
    if config.eval.loader_workers is not None:
        return config.eval.loader_workers
    return gpu_loader_workers() if torch.cuda.is_available() else 0


def gpu_loader_workers() -> int:
    """The extraction's loader workers beside a GPU: the cores this process may use, up to 4."""
    return min(4, usable_cores())


def usable_cores() -> int:
    ray = sys.modules.get("ray")  # never imported here for this: only a process that uses Ray has it loaded
    if ray is not None and ray.is_initialized():
        try:
            assigned = ray.get_runtime_context().get_assigned_resources().get("CPU")
        except AssertionError:  # how Ray says that this process is a driver, not a task or actor
            assigned = None
        if assigned:
            return max(1, int(assigned))
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _loader(config: Config, split: str, num_views: int, batch: int, rank: int, world_size: int,
            train: bool, num_workers: int | None = None, resample_batches: int | None = None,
            shard_pattern: str | None = None, **options) -> SequenceLoader:
    return build_sequence_loader(
        f"{config.data.shards.rstrip('/')}/{split}", composer=composer_options(config),
        num_views=num_views, batch_size=batch, rank=rank, world_size=world_size,
        num_workers=config.data.loader_workers if num_workers is None else num_workers, seed=config.train.seed,
        train=train, shuffle_buffer=config.data.shuffle_buffer, s3=s3_options(config),
        resample_batches=resample_batches, shard_pattern=shard_pattern, **options)


def composer_options(config: Config) -> dict:
    """The `data.*` values that turn a shard set's samples into sequences: every load-time option of the dataset
    registry, by name (its options dataclasses' fields are `data.*` keys); data_pipeline picks the composer of the
    dataset the shards hold and the values its options declare (`data_pipeline.composer_for`)."""
    return {name: getattr(config.data, name) for name in load_option_names()}


def normalisation(loader: SequenceLoader, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The shard set's per-channel mean and std as (C, 1, 1) tensors on the device, made once."""
    return tuple(torch.tensor(values, device=device).view(-1, 1, 1) for values in (loader.mean, loader.std))


def to_device(batch: dict, device: torch.device, mean: torch.Tensor, std: torch.Tensor, composer=None) -> dict:
    """A loader batch with its uint8 views as normalised float (B, V, C, H, W) on the device (the last view is the
    prediction target), and the actions and labels there too; other fields stay where they are. A batch that
    carries render inputs instead of views (`data.render_on=device`) is rendered first, on the device, by the
    loader's `composer`."""
    if RENDER_INPUTS in batch:
        batch = render_planned(composer, batch, device)
    views = batch["views"].to(device, non_blocking=True).float().div_(255.0).sub_(mean).div_(std)
    moved = {key: batch[key].to(device, non_blocking=True) for key in ("rel_actions", "actions", "label")}
    return {**batch, "views": views, **moved}


class DeviceFeed:
    """Loader batches -> device batches (`to_device`), for the training loop.

    On CUDA each batch is copied (from the loader's page-locked memory), rendered if it carries render inputs, and
    normalised on a side stream, so the copy and the rendering overlap the step the GPU is still computing (the
    loop does not wait for the device between steps); the compute stream then waits for that work only. On CPU a
    batch is converted when it is asked for.
    """

    def __init__(self, device: torch.device, mean: torch.Tensor, std: torch.Tensor, composer=None):
        self.device, self.mean, self.std, self.composer = device, mean, std, composer
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def __call__(self, batches: Iterable[dict]) -> Iterator[dict]:
        for batch in batches:
            if self.stream is None:
                yield to_device(batch, self.device, self.mean, self.std, self.composer)
                continue
            with torch.cuda.stream(self.stream):
                moved = to_device(batch, self.device, self.mean, self.std, self.composer)
            compute = torch.cuda.current_stream(self.device)
            compute.wait_stream(self.stream)
            for value in moved.values():
                if torch.is_tensor(value) and value.is_cuda:
                    value.record_stream(compute)  # the allocator must not reuse it before the step is done
            yield moved
