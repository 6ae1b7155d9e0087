"""`python -m data_pipeline`: fetch Fashion-MNIST, write it as shard sets.

  python -m data_pipeline fetch fashion-mnist [--source-dir D] [--cache-dir C]
  python -m data_pipeline write fashion-mnist --out DIR [--source-dir D] [--cache-dir C]
                                              [--samples-per-shard N] [--limit N]
"""

from __future__ import annotations

import argparse
import sys
import time

from data_pipeline.errors import DataError
from data_pipeline.fashion_mnist import locate_or_fetch_fashion_mnist
from data_pipeline.prepare import SPLITS, write_split
from data_pipeline.shards import local_dir

DEFAULT_CACHE = "~/seq-jepa/data/cache"  # the trainer's data.cache_dir default


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m data_pipeline", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("fetch", "locate or download the IDX files; print their folder"),
                            ("write", "write the train/ and val/ shard sets")):
        cmd = commands.add_parser(name, help=help_text)
        cmd.add_argument("dataset", choices=["fashion-mnist"])
        cmd.add_argument("--source-dir", help="folder already holding the four IDX files (plain or .gz)")
        cmd.add_argument("--cache-dir", default=DEFAULT_CACHE, help=f"where fetched files are kept ({DEFAULT_CACHE})")
        if name == "write":
            cmd.add_argument("--out", required=True, help="output folder; gets train/ and val/")
            cmd.add_argument("--samples-per-shard", type=int, default=2000)
            cmd.add_argument("--limit", type=int, help="keep only the first N samples of each split")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        raw_dir = locate_or_fetch_fashion_mnist(args.source_dir, args.cache_dir)
        if args.command == "fetch":
            print(raw_dir)
            return 0
        for split in SPLITS:
            start = time.perf_counter()
            manifest = write_split(raw_dir, split, local_dir(args.out) / split, args.samples_per_shard, args.limit)
            size = sum(s.bytes for s in manifest.shards)
            print(f"{split}: {len(manifest.shards)} shards, {manifest.num_samples} samples, {size / 1e6:.1f} MB, "
                  f"{time.perf_counter() - start:.1f} s -> {local_dir(args.out) / split}")
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
