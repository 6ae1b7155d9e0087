"""Writing a dataset's splits as shard sets (`write_dataset`), and a run's train/ and val/ sets before training
when they are not there yet (`prepare_shards`), for any dataset in the registry (`datasets.DATASETS`).

A dataset whose source can fetch its raw files (Fashion-MNIST) finds or downloads them itself; the others are
written from `source_dir` (or, needing none, from data their source finds itself: MNIST).
"""

from __future__ import annotations

import itertools
import math
import os
from pathlib import Path

from data_pipeline import storage
from data_pipeline.datasets import dataset_spec
from data_pipeline.errors import DataError
from data_pipeline.shards import Manifest, check_shards_present, read_manifest, write_samples
from data_pipeline.storage import S3Options

SPLITS = ("train", "val")
MAX_SAMPLES_PER_SHARD = 2000
MIN_SHARDS = 8  # the default shard size leaves enough shards for 2 ranks x 4 loader workers (a small val split)


def default_samples_per_shard(num_samples: int) -> int:
    """Up to MAX_SAMPLES_PER_SHARD a shard, smaller where a split would otherwise have fewer than MIN_SHARDS."""
    return max(1, min(MAX_SAMPLES_PER_SHARD, math.ceil(num_samples / MIN_SHARDS)))


def write_dataset(name: str, root: str | os.PathLike | None, out: str, *, splits: tuple[str, ...] | None = None,
                  samples_per_shard: int | None = None, limit: int | None = None, progress: bool = True,
                  s3: S3Options | None = None, cache_dir: str | None = None, system_packages: bool = False,
                  **options) -> dict[str, Manifest]:
    """Write each split of dataset `name` found under `root` as the shard set `out/<split>` (samples_per_shard
    None: `default_samples_per_shard` of the split's size; `limit`: only the first N samples of each split).

    `options`: the write-time options its `read_split` takes (None: not given). A dataset whose source fetches its
    raw files looks for them in `root`, else in `cache_dir`, else downloads them there (`system_packages`: it may
    use apt-get, see `sources/fashion_mnist.py`).
    """
    spec = dataset_spec(name)
    unknown = sorted(k for k, v in options.items() if v is not None and k not in spec.write_option_names)
    if unknown:
        raise DataError(f"{name} takes no {', '.join(unknown)} option (it takes: "
                        f"{', '.join(spec.write_option_names) or 'none'})")
    splits = splits or spec.splits
    bad = [s for s in splits if s not in spec.splits + spec.extra_splits]
    if bad:
        raise DataError(f"{name} has no split {bad[0]!r}; its splits are {', '.join(spec.splits + spec.extra_splits)}")
    if limit is not None and limit < 1:
        raise DataError(f"limit must be >= 1, got {limit}")
    kwargs = {k: v for k, v in options.items() if v is not None}
    if root is None and spec.needs_source:
        raise DataError(f"writing {name} needs --source-dir, the folder holding the raw dataset")
    if spec.fetches:
        root = spec.fetch(os.fspath(root) if root is not None else None, cache_dir, system_packages=system_packages)
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


def _complete(split_dir: str, s3: S3Options | None) -> bool:
    """A valid manifest whose shard files are all there with the recorded sizes."""
    try:
        check_shards_present(split_dir, read_manifest(split_dir, s3), s3)
    except DataError:
        return False
    return True


def prepare_shards(dataset: str, out_dir: str | os.PathLike, source_dir: str | None, cache_dir: str,
                   samples_per_shard: int | None, *, progress: bool = True, s3: S3Options | None = None,
                   splits: tuple[str, ...] = SPLITS, system_packages: bool = False,
                   limit: int | None = None) -> dict[str, str]:
    """`out_dir/<split>` of `dataset` for each split, written unless all are already complete (local or s3://).

    `system_packages`: a source that fetches its raw files may use apt-get (Fashion-MNIST, see
    `sources/fashion_mnist.locate_or_fetch_fashion_mnist`). `limit` keeps only the first N samples of each split
    (small sets for tests).
    """
    spec = dataset_spec(dataset)
    base = os.fspath(out_dir) if storage.is_remote(out_dir) else str(storage.local_path(out_dir))
    dirs = {split: storage.join(base, split) for split in splits}
    if all(_complete(d, s3) for d in dirs.values()):
        return dirs
    if source_dir is None and spec.needs_source:
        raise DataError(f"no complete {dataset} shard sets under {base}; write them with `python -m data_pipeline "
                        f"write {dataset} --source-dir RAW --out {base}` or set data.source_dir to the raw dataset's "
                        "folder")
    write_dataset(dataset, source_dir, base, splits=splits, samples_per_shard=samples_per_shard, limit=limit,
                  progress=progress, s3=s3, cache_dir=cache_dir, system_packages=system_packages)
    return dirs


def prepare_fashion_mnist_shards(out_dir: str | os.PathLike, source_dir: str | None, cache_dir: str,
                                 samples_per_shard: int | None, limit: int | None = None, *,
                                 progress: bool = True, s3: S3Options | None = None,
                                 system_packages: bool = False) -> dict[str, str]:
    """Write `out_dir/train` and `out_dir/val` Fashion-MNIST shard sets (local or s3://); nothing if both are
    complete. `limit` keeps only the first N samples of each split (small sets for tests)."""
    return prepare_shards("fashion-mnist", out_dir, source_dir, cache_dir, samples_per_shard, progress=progress,
                          s3=s3, system_packages=system_packages, limit=limit)
