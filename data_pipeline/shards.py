"""Shard sets on disk: write webdataset tar shards plus manifest.json, read and verify them back.

A shard set is a folder with `shard-000000.tar, ...` and `manifest.json`. The manifest is written
last, so its presence means the set is complete; it records per-shard sample counts (the loader
computes its length from them without opening a shard) and checksums.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import webdataset as wds
from tqdm import tqdm

from data_pipeline import storage
from data_pipeline.errors import DataError, NotFound
from data_pipeline.sources.base import DATASET_INFO_KEYS, encode_label, encode_png
from data_pipeline.storage import S3Options

SCHEMA_VERSION = 1
KNOWN_SCHEMA_VERSIONS = (1,)
MANIFEST = "manifest.json"
FIELDS = {"image.png": "source image, lossless PNG (8-bit grayscale or RGB)",
          "label.cls": "class index as ASCII decimal"}
WRITE_HINT = "rewrite the shard set with `python -m data_pipeline write DATASET --out DIR`"


@dataclass(frozen=True)
class ShardInfo:
    name: str
    num_samples: int
    sha256: str
    bytes: int


@dataclass
class Manifest:
    schema_version: int
    dataset: str
    split: str
    num_samples: int
    shards: list[ShardInfo]
    fields: dict[str, str]
    dataset_info: dict

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2) + "\n"


def local_dir(shard_dir: str | os.PathLike) -> Path:
    """The local folder behind a path or file:// URL (DataError for a remote location)."""
    return storage.local_path(shard_dir)


def shard_urls(shard_dir: str | os.PathLike, manifest: Manifest) -> list[str]:
    """Locations of the shards (paths, or s3:// URLs for a remote set), in manifest order."""
    base = _base(shard_dir)
    if not storage.is_remote(base):
        return [str(Path(base) / shard.name) for shard in manifest.shards]
    return [storage.join(base, shard.name) for shard in manifest.shards]


def read_manifest(shard_dir: str | os.PathLike, s3: S3Options | None = None) -> Manifest:
    """The validated manifest of a shard set (DataError saying what is wrong and where)."""
    where = storage.join(shard_dir, MANIFEST) if storage.is_remote(shard_dir) else local_dir(shard_dir) / MANIFEST
    try:
        doc = json.loads(storage.store_for(shard_dir, s3).read_bytes(str(where)))
    except NotFound:  # still a NotFound: a caller may add how to write the set, unlike to a denied read
        raise NotFound(f"no shard set at {os.fspath(shard_dir)} ({MANIFEST} is missing); {WRITE_HINT}") from None
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read {where}: {err}; {WRITE_HINT}") from None
    return _parse_manifest(doc, where)


def _parse_manifest(doc, where) -> Manifest:
    if not isinstance(doc, dict):
        raise DataError(f"{where} is not a JSON object; {WRITE_HINT}")
    version = doc.get("schema_version")
    if version not in KNOWN_SCHEMA_VERSIONS:
        raise DataError(f"{where} has schema_version {version!r}; this version of data_pipeline knows "
                        f"{', '.join(map(str, KNOWN_SCHEMA_VERSIONS))}; {WRITE_HINT} or update data_pipeline")
    missing = [f.name for f in dataclasses.fields(Manifest) if f.name not in doc]
    missing += [f"dataset_info.{k}" for k in DATASET_INFO_KEYS if k not in (doc.get("dataset_info") or {})]
    if missing:
        raise DataError(f"{where} lacks {', '.join(missing)}; {WRITE_HINT}")
    try:
        shards = [ShardInfo(**entry) for entry in doc["shards"]]
    except TypeError as err:
        raise DataError(f"{where} has a malformed shard entry ({err}); {WRITE_HINT}") from None
    if sum(s.num_samples for s in shards) != doc["num_samples"]:
        raise DataError(f"{where}: shard sample counts do not add up to num_samples={doc['num_samples']}; {WRITE_HINT}")
    return Manifest(**{**doc, "shards": shards})


def select_shards(manifest: Manifest, pattern: str, where: str) -> Manifest:
    """The manifest of the set's shards that a brace pattern names, e.g. `shard-{000000..000009}.tar`."""
    names = storage.expand_urls(pattern)
    known = {shard.name: shard for shard in manifest.shards}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise DataError(f"{where} has no shard {unknown[0]} ({len(unknown)} of the {len(names)} that {pattern} names "
                        f"are not in its manifest; it holds {manifest.shards[0].name} .. {manifest.shards[-1].name})")
    chosen = [known[name] for name in dict.fromkeys(names)]
    return dataclasses.replace(manifest, shards=chosen, num_samples=sum(s.num_samples for s in chosen))


def verify_shards(shard_dir: str | os.PathLike, s3: S3Options | None = None) -> Manifest:
    """Check every shard's size and sha256 against the manifest; DataError naming the first bad one.

    Also lists the folder: a shard the manifest does not know is reported (a mixed-up upload).
    """
    manifest = read_manifest(shard_dir, s3)
    store = storage.store_for(shard_dir, s3)
    present = check_shards_present(shard_dir, manifest, s3)
    urls = shard_urls(shard_dir, manifest)
    for shard, url in zip(manifest.shards, urls):
        with store.open(url) as stream:
            digest, size = _sha256_stream(stream)
        if size != shard.bytes or digest != shard.sha256:
            raise DataError(f"shard {url} does not match its manifest checksum (corrupt or replaced); {WRITE_HINT}")
    strays = sorted(u for u in set(present) - set(urls) if u.endswith(".tar"))
    if strays:
        raise DataError(f"{strays[0]} is a shard the manifest of {os.fspath(shard_dir)} does not list "
                        f"({len(strays)} such); remove it or rewrite the set")
    return manifest


def check_shards_present(shard_dir: str | os.PathLike, manifest: Manifest, s3: S3Options | None = None) -> dict:
    """One listing: every shard the manifest names is there with its recorded size (DataError if not).

    Cheap enough to run before every training job; catches missing, truncated or replaced shards
    before any worker starts. Returns the listing ({location: bytes}).
    """
    listing = storage.store_for(shard_dir, s3).list_sizes(_base(shard_dir))
    for shard, url in zip(manifest.shards, shard_urls(shard_dir, manifest)):
        if url not in listing:
            raise DataError(f"shard {url} listed in the manifest is missing; {WRITE_HINT}")
        if listing[url] != shard.bytes:
            raise DataError(f"shard {url} has {listing[url]} bytes but the manifest says {shard.bytes} "
                            f"(truncated or replaced); {WRITE_HINT}")
    return listing


def _base(shard_dir: str | os.PathLike) -> str:
    return os.fspath(shard_dir) if storage.is_remote(shard_dir) else str(local_dir(shard_dir))


def _sha256_stream(stream) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    for block in iter(lambda: stream.read(1 << 20), b""):
        digest.update(block)
        size += len(block)
    return digest.hexdigest(), size


def _sha256(path: str | os.PathLike) -> str:
    with open(path, "rb") as f:
        return _sha256_stream(f)[0]


def _checked_info(images: np.ndarray, labels: np.ndarray, dataset_info: dict) -> dict:
    """dataset_info completed with the image geometry, which must agree with the array."""
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[3] not in (1, 3)):
        raise DataError(f"write_shards needs uint8 images (N, H, W) or (N, H, W, 1|3), got {images.dtype} "
                        f"{images.shape}")
    if labels.shape != (len(images),):
        raise DataError(f"write_shards got {labels.shape} labels for {len(images)} images")
    geometry = {"channels": 1 if images.ndim == 3 else images.shape[3],
                "height": images.shape[1], "width": images.shape[2]}
    clash = {k: v for k, v in geometry.items() if dataset_info.get(k, v) != v}
    if clash:
        raise DataError(f"dataset_info {clash} disagrees with the images' shape {images.shape}")
    info = {**dataset_info, **geometry}
    missing = [k for k in DATASET_INFO_KEYS if k not in info]
    if missing:
        raise DataError(f"dataset_info lacks {', '.join(missing)}")
    return info


def write_shards(images: np.ndarray, labels: np.ndarray, out_dir: str | os.PathLike, *,
                 samples_per_shard: int = 2000, dataset_info: dict, dataset: str = "custom",
                 split: str = "train", progress: bool = True, s3: S3Options | None = None) -> Manifest:
    """Write images/labels (one `image.png` + `label.cls` sample each) as a shard set; see `write_samples`."""
    images, labels = np.asarray(images), np.asarray(labels)
    info = _checked_info(images, labels, dataset_info)
    if images.ndim == 4 and images.shape[3] == 1:
        images = images[..., 0]  # PIL writes single-channel arrays as (H, W) grayscale
    samples = ({"image.png": encode_png(image), "label.cls": encode_label(label)}
               for image, label in zip(images, labels))
    return write_samples(samples, len(images), out_dir, fields=dict(FIELDS), dataset_info=info,
                         samples_per_shard=samples_per_shard, dataset=dataset, split=split, progress=progress, s3=s3)


def write_samples(samples: Iterable[dict[str, bytes]], num_samples: int, out_dir: str | os.PathLike, *,
                  fields: dict[str, str], dataset_info: dict, samples_per_shard: int = 2000, dataset: str = "custom",
                  split: str = "train", progress: bool = True, s3: S3Options | None = None) -> Manifest:
    """Write encoded samples ({field: bytes}) as a shard set in out_dir, replacing an earlier set there.

    Everything goes to a hidden sibling folder first and is renamed into place at the end, so an
    interrupted write never leaves a half-written set behind. An s3:// out_dir is written to a local
    temporary folder, then uploaded (see `upload_shard_set`). `num_samples` is the count the source
    announced; a source that yields another number is an error (the manifest would lie).
    """
    missing = [k for k in DATASET_INFO_KEYS if k not in dataset_info]
    if missing:
        raise DataError(f"dataset_info lacks {', '.join(missing)}")
    if samples_per_shard < 1:
        raise DataError(f"samples_per_shard must be >= 1, got {samples_per_shard}")
    if storage.is_remote(out_dir):
        with tempfile.TemporaryDirectory(prefix="seq-jepa-shards-") as tmp:
            manifest = write_samples(samples, num_samples, Path(tmp) / "set", fields=fields, dataset_info=dataset_info,
                                     samples_per_shard=samples_per_shard, dataset=dataset, split=split,
                                     progress=progress)
            upload_shard_set(Path(tmp) / "set", os.fspath(out_dir), s3, progress=progress)
        return manifest
    out = local_dir(out_dir)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).exists())):
        raise DataError(f"{out} exists and is not a shard set; choose an empty or new output folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the finished set should be readable like any folder
    try:
        shards, written = [], 0
        bar = tqdm(total=num_samples, desc=f"writing {split} shards", unit="sample", disable=not progress)
        iterator = iter(samples)
        while True:
            chunk = list(itertools.islice(iterator, samples_per_shard))
            if not chunk:
                break
            name = f"shard-{len(shards):06d}.tar"
            # mtime=0 makes the tar bytes, hence the checksums, reproducible.
            with wds.TarWriter(str(tmp / name), encoder=False, mtime=0) as sink:
                for i, sample in enumerate(chunk, start=written):
                    sink.write({"__key__": f"{i:08d}", **sample})
            written += len(chunk)
            bar.update(len(chunk))
            shards.append(ShardInfo(name, len(chunk), _sha256(tmp / name), (tmp / name).stat().st_size))
        bar.close()
        if written != num_samples:
            raise DataError(f"the {dataset} source announced {num_samples} {split} samples but gave {written}")
        manifest = Manifest(SCHEMA_VERSION, dataset, split, written, shards, dict(fields), dict(dataset_info))
        (tmp / MANIFEST).write_text(manifest.to_json())
        _replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def _replace_dir(new: Path, dest: Path) -> None:
    """Move `new` to `dest`, swapping out an existing `dest` (renames are atomic on one filesystem)."""
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        os.replace(dest, old)
        os.replace(new, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, dest)


def upload_shard_set(local: str | os.PathLike, url: str, s3: S3Options | None = None, *,
                     progress: bool = True) -> Manifest:
    """Copy a complete local shard set to s3://bucket/prefix, replacing a set already there.

    Order matters for readers: the old manifest goes first (the prefix then holds no set rather than
    a set whose checksums no longer match), the new manifest last (its presence means complete),
    then shards the new manifest does not list are removed.
    """
    manifest = verify_shards(local)
    store = storage.store_for(url, s3)
    remote_manifest = storage.join(url, MANIFEST)
    if store.exists(remote_manifest):
        store.delete(remote_manifest)
    for shard in tqdm(manifest.shards, desc=f"uploading to {url}", unit="shard", disable=not progress):
        store.put_file(local_dir(local) / shard.name, storage.join(url, shard.name))
    store.put_file(local_dir(local) / MANIFEST, remote_manifest)
    listed = set(shard_urls(url, manifest))
    for stray in (u for u in store.list_sizes(url) if u.endswith(".tar") and u not in listed):
        store.delete(stray)
    return manifest
