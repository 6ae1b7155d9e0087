"""A run's train/ and val/ shard sets, written before training when they are not there yet.

Fashion-MNIST is located or fetched by itself; the paper's datasets are written from `source_dir`.
"""

from __future__ import annotations

import os
from pathlib import Path

from data_pipeline import fashion_mnist, storage
from data_pipeline.datasets import dataset_spec, default_samples_per_shard, write_dataset
from data_pipeline.errors import DataError
from data_pipeline.shards import Manifest, check_shards_present, read_manifest, write_shards
from data_pipeline.storage import S3Options

SPLITS = ("train", "val")


def _complete(split_dir: str, s3: S3Options | None) -> bool:
    """A valid manifest whose shard files are all there with the recorded sizes."""
    try:
        check_shards_present(split_dir, read_manifest(split_dir, s3), s3)
    except DataError:
        return False
    return True


def prepare_shards(dataset: str, out_dir: str | os.PathLike, source_dir: str | None, cache_dir: str,
                   samples_per_shard: int | None, *, progress: bool = True, s3: S3Options | None = None,
                   splits: tuple[str, ...] = SPLITS, system_packages: bool = False) -> dict[str, str]:
    """`out_dir/<split>` of `dataset` for each split, written unless all are already complete.

    `system_packages`: Fashion-MNIST may be fetched with apt-get (see `fashion_mnist.locate_or_fetch_fashion_mnist`).
    """
    if dataset == "fashion-mnist":
        return prepare_fashion_mnist_shards(out_dir, source_dir, cache_dir, samples_per_shard, progress=progress, s3=s3,
                                            system_packages=system_packages)
    base = os.fspath(out_dir) if storage.is_remote(out_dir) else str(storage.local_path(out_dir))
    dirs = {split: storage.join(base, split) for split in splits}
    if all(_complete(d, s3) for d in dirs.values()):
        return dirs
    if source_dir is None and dataset_spec(dataset).needs_source:
        raise DataError(f"no complete {dataset} shard sets under {base}; write them with `python -m data_pipeline "
                        f"write {dataset} --source-dir RAW --out {base}` or set data.source_dir to the raw dataset's "
                        "folder")
    write_dataset(dataset, source_dir, base, splits=splits, samples_per_shard=samples_per_shard, progress=progress,
                  s3=s3)
    return dirs


def prepare_fashion_mnist_shards(out_dir: str | os.PathLike, source_dir: str | None, cache_dir: str,
                                 samples_per_shard: int | None, limit: int | None = None, *,
                                 progress: bool = True, s3: S3Options | None = None,
                                 system_packages: bool = False) -> dict[str, str]:
    """Write `out_dir/train` and `out_dir/val` shard sets (local or s3://); nothing if both are complete.

    `limit` keeps only the first N samples of each split (small sets for tests).
    """
    base = os.fspath(out_dir) if storage.is_remote(out_dir) else str(storage.local_path(out_dir))
    dirs = {split: storage.join(base, split) for split in SPLITS}
    if all(_complete(d, s3) for d in dirs.values()):
        return dirs
    raw_dir = fashion_mnist.locate_or_fetch_fashion_mnist(source_dir, cache_dir, system_packages=system_packages)
    for split, split_dir in dirs.items():
        write_split(raw_dir, split, split_dir, samples_per_shard, limit, progress=progress, s3=s3)
    return dirs


def write_split(raw_dir: Path, split: str, split_dir: str | os.PathLike, samples_per_shard: int | None,
                limit: int | None = None, *, progress: bool = True, s3: S3Options | None = None) -> Manifest:
    """One split of the IDX files in raw_dir as a shard set in split_dir (always rewritten; samples_per_shard
    None: the writer's default for the split's size)."""
    if limit is not None and limit < 1:
        raise DataError(f"limit must be >= 1, got {limit}")
    if split not in SPLITS:
        raise DataError(f"fashion-mnist has no split {split!r}; its splits are {', '.join(SPLITS)}")
    images, labels = fashion_mnist.load_split(raw_dir, split)
    images, labels = images[:limit], labels[:limit]
    per_shard = samples_per_shard or default_samples_per_shard(len(labels))
    return write_shards(images, labels, split_dir, samples_per_shard=per_shard,
                        dataset_info=fashion_mnist.dataset_info(), dataset="fashion-mnist", split=split,
                        progress=progress, s3=s3)
