"""Fashion-MNIST IDX files -> train/ and val/ shard sets (what the CLI and the trainer run)."""

from __future__ import annotations

import os
from pathlib import Path

from data_pipeline import fashion_mnist
from data_pipeline.errors import DataError
from data_pipeline.shards import Manifest, local_dir, read_manifest, write_shards

SPLITS = ("train", "val")


def _complete(split_dir: Path) -> bool:
    """A valid manifest whose shard files are all there with the recorded sizes."""
    try:
        manifest = read_manifest(split_dir)
    except DataError:
        return False
    return all((split_dir / s.name).is_file() and (split_dir / s.name).stat().st_size == s.bytes
               for s in manifest.shards)


def prepare_fashion_mnist_shards(out_dir: str | os.PathLike, source_dir: str | None, cache_dir: str,
                                 samples_per_shard: int, limit: int | None = None, *,
                                 progress: bool = True) -> dict[str, Path]:
    """Write `out_dir/train` and `out_dir/val` shard sets; does nothing if both are already complete.

    `limit` keeps only the first N samples of each split (small sets for tests).
    """
    out = local_dir(out_dir)
    dirs = {split: out / split for split in SPLITS}
    if all(_complete(d) for d in dirs.values()):
        return dirs
    raw_dir = fashion_mnist.locate_or_fetch_fashion_mnist(source_dir, cache_dir)
    for split, split_dir in dirs.items():
        write_split(raw_dir, split, split_dir, samples_per_shard, limit, progress=progress)
    return dirs


def write_split(raw_dir: Path, split: str, split_dir: Path, samples_per_shard: int, limit: int | None = None, *,
                progress: bool = True) -> Manifest:
    """One split of the IDX files in raw_dir as a shard set in split_dir (always rewritten)."""
    if limit is not None and limit < 1:
        raise DataError(f"limit must be >= 1, got {limit}")
    images, labels = fashion_mnist.load_split(raw_dir, split)
    return write_shards(images[:limit], labels[:limit], split_dir, samples_per_shard=samples_per_shard,
                        dataset_info=fashion_mnist.dataset_info(), dataset="fashion-mnist", split=split,
                        progress=progress)
