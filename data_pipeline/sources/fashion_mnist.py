"""Fashion-MNIST as a source (the embedded default): read IDX files, find them locally or fetch them, load a split.

Writing it needs no folder: `locate_or_fetch_fashion_mnist` finds the four IDX files in data.source_dir, the
cache, the Debian package `dataset-fashion-mnist` or over HTTP; `read_split` turns a split of them into
`image.png` (28x28 grayscale) + `label.cls` samples, composed at load time like MNIST's (`sources/affine.py`).
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import numpy as np

from data_pipeline.errors import DataError
from data_pipeline.shards import FIELDS
from data_pipeline.sources.base import SourceSplit, encode_label, encode_png

CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
MEAN = 0.2860  # pixel statistics of the train split on [0, 1] intensities
STD = 0.3530

# Base names of the four IDX files; a folder may hold each one gzipped (`.gz`) or not.
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "val": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IDX_FILES = [name for pair in SPLIT_FILES.values() for name in pair]
DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEBIAN_DIR = "usr/share/datasets/fashion-mnist"
URL_BASE = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
HTTP_TIMEOUT_S = 60
FIX_HINT = "pass a folder holding the four IDX files via data.source_dir (CLI: --source-dir)"

# IDX type codes (third magic byte) -> big-endian numpy dtypes.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def dataset_info() -> dict:
    """What the manifest records about the dataset (the loader and trainer read it back)."""
    return {"num_classes": len(CLASS_NAMES), "class_names": list(CLASS_NAMES), "channels": 1,
            "height": 28, "width": 28, "mean": MEAN, "std": STD}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An IDX file (gzipped or not, told apart by content) as a native-endian numpy array."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":  # gzip magic
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise DataError(f"IDX file {path} does not exist") from None
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise DataError(f"cannot read IDX file {path}: {err}; delete it so it is fetched again") from None
    if len(raw) < 4 or raw[0:2] != b"\x00\x00" or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise DataError(f"{path} is not an IDX file (bad magic number {raw[:4].hex() or 'none'}); "
                        f"delete it so it is fetched again, or {FIX_HINT}")
    ndim, dtype = raw[3], np.dtype(_IDX_DTYPES[raw[2]])
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"IDX file {path} is truncated inside its header; delete it so it is fetched again")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    expected = header + int(np.prod(dims)) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(f"IDX file {path} has {len(raw)} bytes but its header (dims {dims}) implies {expected}; "
                        "the file is truncated or corrupt, delete it so it is fetched again")
    return np.frombuffer(raw, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def find_idx_file(folder: Path, name: str) -> Path | None:
    """`folder/name.gz` or `folder/name`, whichever exists."""
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.is_file():
            return candidate
    return None


def missing_idx_files(folder: Path) -> list[str]:
    return [name for name in IDX_FILES if find_idx_file(folder, name) is None]


def locate_or_fetch_fashion_mnist(source_dir: str | None, cache_dir: str, *, system_packages: bool = False) -> Path:
    """A folder holding the four IDX files: source_dir, else the cache, else fetched into the cache.

    Fetching tries HTTP; with `system_packages` (the explicit `python -m data_pipeline fetch`/`write` and a
    run's first-time prepare step) it first tries the Debian package with apt-get, saying so on stderr.
    """
    if source_dir is not None:
        folder = Path(source_dir).expanduser()
        if not folder.is_dir():
            raise DataError(f"data.source_dir {folder} is not a folder; {FIX_HINT}")
        missing = missing_idx_files(folder)
        if missing:
            raise DataError(f"data.source_dir {folder} lacks {', '.join(missing)} (plain or .gz); {FIX_HINT}")
        return folder
    raw_dir = Path(cache_dir).expanduser() / "fashion-mnist" / "raw"
    if not missing_idx_files(raw_dir):
        return raw_dir
    sources = [("HTTP " + URL_BASE, _fetch_from_http)]
    if system_packages:
        sources.insert(0, ("apt package " + DEBIAN_PACKAGE, _fetch_from_apt))
    failures = []
    for name, fetch in sources:
        try:
            fetch(raw_dir)
        except Exception as err:  # noqa: BLE001 - any failure moves on to the next source; all are reported below
            failures.append(f"{name}: {err}")
            continue
        if not missing_idx_files(raw_dir):
            return raw_dir
        failures.append(f"{name}: still missing {', '.join(missing_idx_files(raw_dir))}")
    if not system_packages:
        failures.append(f"the Debian package {DEBIAN_PACKAGE} was not tried: `python -m data_pipeline fetch "
                        "fashion-mnist` fetches it with apt-get")
    raise DataError(f"Fashion-MNIST is not in {raw_dir} and could not be fetched ({'; '.join(failures)}); {FIX_HINT}")


fetch = locate_or_fetch_fashion_mnist  # what the registry calls (datasets.DatasetSpec.fetch)


def _say(message: str) -> None:
    print(f"[data] {message}", file=sys.stderr, flush=True)


def _install(src: Path, dest_dir: Path) -> None:
    """Copy under a temporary name, then rename: a reader never sees a half-written file."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    tmp = dest_dir / f".{src.name}.part-{os.getpid()}"
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest_dir / src.name)


def _run(cmd: list[str], cwd: str) -> None:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        last = (done.stderr.strip() or done.stdout.strip()).splitlines()
        raise RuntimeError(f"`{' '.join(cmd)}` failed: {last[-1] if last else f'exit {done.returncode}'}")


def _fetch_from_apt(raw_dir: Path) -> None:
    """`apt-get download` the Debian package (no root needed) and unpack it with dpkg-deb."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise RuntimeError("apt-get/dpkg-deb not available")
    with tempfile.TemporaryDirectory() as tmp:
        _say(f"fetching Fashion-MNIST into {raw_dir}: `apt-get download {DEBIAN_PACKAGE}` (the Debian package, "
             "downloaded into a temporary folder and unpacked; nothing is installed)")
        try:
            _run(["apt-get", "download", DEBIAN_PACKAGE], tmp)
        except RuntimeError:
            _say("that failed; running `apt-get update` (a stale package index is the usual cause), then again")
            _run(["apt-get", "update"], tmp)
            _run(["apt-get", "download", DEBIAN_PACKAGE], tmp)
        debs = list(Path(tmp).glob("*.deb"))
        if not debs:
            raise RuntimeError("apt-get download produced no .deb file")
        _run(["dpkg-deb", "-x", str(debs[0]), "root"], tmp)
        unpacked = Path(tmp) / "root" / DEBIAN_DIR
        for name in IDX_FILES:
            found = find_idx_file(unpacked, name)
            if found is None:
                raise RuntimeError(f"the package has no {DEBIAN_DIR}/{name}[.gz]")
            _install(found, raw_dir)


def _fetch_from_http(raw_dir: Path) -> None:
    raw_dir.mkdir(parents=True, exist_ok=True)
    for name in IDX_FILES:
        if find_idx_file(raw_dir, name) is not None:
            continue
        url = f"{URL_BASE}{name}.gz"
        tmp = raw_dir / f".{name}.gz.part-{os.getpid()}"
        try:
            with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as response, open(tmp, "wb") as out:
                shutil.copyfileobj(response, out)
            os.replace(tmp, raw_dir / f"{name}.gz")
        except Exception as err:  # noqa: BLE001 - any download failure: one line naming the URL, no partial file
            tmp.unlink(missing_ok=True)
            raise RuntimeError(f"{url}: {err}") from None


def load_split(raw_dir: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 28, 28), labels int64 (N,)); "val" is the t10k test split."""
    if split not in SPLIT_FILES:
        raise DataError(f"unknown split {split!r}; use one of {sorted(SPLIT_FILES)}")
    folder = Path(raw_dir)
    paths = [find_idx_file(folder, name) for name in SPLIT_FILES[split]]
    if None in paths:
        raise DataError(f"{folder} lacks {', '.join(missing_idx_files(folder))} (plain or .gz); {FIX_HINT}")
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"{paths[0]} holds {images.dtype} {images.shape}, expected uint8 images (N, H, W)")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{paths[1]} holds {labels.shape} labels for {len(images)} images in {paths[0]}")
    if len(labels) and not 0 <= labels.min() <= labels.max() < len(CLASS_NAMES):
        raise DataError(f"{paths[1]} has labels outside 0..{len(CLASS_NAMES) - 1}")
    return images, labels.astype(np.int64)


def read_split(root: str | os.PathLike, split: str) -> SourceSplit:
    """One split of the IDX files in `root` (the folder `locate_or_fetch_fashion_mnist` found) as shard samples."""
    images, labels = load_split(Path(root).expanduser(), split)

    def samples():
        for image, label in zip(images, labels):
            yield {"image.png": encode_png(image), "label.cls": encode_label(int(label))}

    return SourceSplit(samples=samples(), num_samples=len(images), fields=dict(FIELDS), dataset_info=dataset_info())
