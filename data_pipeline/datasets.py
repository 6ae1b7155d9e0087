"""The datasets `python -m data_pipeline write` converts, and how each of their splits becomes a shard set.

Each entry names the source module's `read_split`, the splits it has, and which write-time options
it takes; `write_dataset` streams a split's encoded samples into a shard set (local or s3://).
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from data_pipeline import storage
from data_pipeline.errors import DataError
from data_pipeline.shards import Manifest, write_samples
from data_pipeline.sources import cifar, imagenet, mnist, stl10, threedie, tinyimagenet
from data_pipeline.sources.base import SourceSplit
from data_pipeline.storage import S3Options


@dataclass(frozen=True)
class DatasetSpec:
    read_split: Callable[..., SourceSplit]  # (root, split, **options) -> SourceSplit
    splits: tuple[str, ...]  # written by default, in this order
    options: tuple[str, ...] = ()  # write-time keyword options its read_split accepts
    extra_splits: tuple[str, ...] = ()  # written only when asked for
    needs_source: bool = True  # False: read_split finds the data itself when given no folder (mnist)


DATASETS: dict[str, DatasetSpec] = {
    "cifar100": DatasetSpec(cifar.read_split, ("train", "val")),
    "tinyimagenet": DatasetSpec(tinyimagenet.read_split, ("train", "val")),
    "3diebench": DatasetSpec(threedie.read_split, ("train", "val"), ("index_dir", "image_size"), ("ood",)),
    "stl10": DatasetSpec(stl10.read_split, ("train", "unlabeled", "val"), ("saliency_root",)),
    "imagenet": DatasetSpec(imagenet.read_split, ("train", "val"), ("saliency_root", "image_size")),
    "mnist": DatasetSpec(mnist.read_split, ("train", "val"), needs_source=False),
}


MAX_SAMPLES_PER_SHARD = 2000
MIN_SHARDS = 8  # the default shard size leaves enough shards for 2 ranks x 4 loader workers (a small val split)


def default_samples_per_shard(num_samples: int) -> int:
    """Up to MAX_SAMPLES_PER_SHARD a shard, smaller where a split would otherwise have fewer than MIN_SHARDS."""
    return max(1, min(MAX_SAMPLES_PER_SHARD, math.ceil(num_samples / MIN_SHARDS)))


def dataset_spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of fashion-mnist, {', '.join(DATASETS)}")
    return DATASETS[name]


def write_dataset(name: str, root: str | os.PathLike | None, out: str, *, splits: tuple[str, ...] | None = None,
                  samples_per_shard: int | None = None, limit: int | None = None, progress: bool = True,
                  s3: S3Options | None = None, **options) -> dict[str, Manifest]:
    """Write each split of dataset `name` found under `root` as the shard set `out/<split>` (samples_per_shard
    None: `default_samples_per_shard` of the split's size)."""
    spec = dataset_spec(name)
    unknown = sorted(k for k, v in options.items() if v is not None and k not in spec.options)
    if unknown:
        raise DataError(f"{name} takes no {', '.join(unknown)} option (it takes: {', '.join(spec.options) or 'none'})")
    splits = splits or spec.splits
    bad = [s for s in splits if s not in spec.splits + spec.extra_splits]
    if bad:
        raise DataError(f"{name} has no split {bad[0]!r}; its splits are {', '.join(spec.splits + spec.extra_splits)}")
    if limit is not None and limit < 1:
        raise DataError(f"limit must be >= 1, got {limit}")
    kwargs = {k: v for k, v in options.items() if v is not None}
    if root is None and spec.needs_source:
        raise DataError(f"writing {name} needs --source-dir, the folder holding the raw dataset")
    root = Path(root).expanduser() if root is not None else None
    base = out if storage.is_remote(out) else str(storage.local_path(out))
    manifests = {}
    for split in splits:
        source = spec.read_split(root, split, **kwargs)
        count = source.num_samples if limit is None else min(limit, source.num_samples)
        manifests[split] = write_samples(itertools.islice(source.samples, count), count, storage.join(base, split),
                                         fields=source.fields, dataset_info=source.dataset_info,
                                         samples_per_shard=samples_per_shard or default_samples_per_shard(count),
                                         dataset=name, split=split,
                                         progress=progress, s3=s3)
    return manifests
