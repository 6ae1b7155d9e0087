"""Fashion-MNIST source: IDX reading, locating/fetching, split loading, the CLI and prepare."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from data_pipeline import DataError, prepare_fashion_mnist_shards, read_manifest, verify_shards
from data_pipeline.sources import fashion_mnist as fm
from tests.helpers.paths import PROJECT_ROOT
from tests.helpers.raw_datasets import make_raw_dir, write_idx


@pytest.mark.parametrize("gz", [False, True])
def test_idx_reader_roundtrip(tmp_path, gz):
    array = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    path = write_idx(tmp_path / "x-idx3-ubyte", array, gz)
    out = fm.read_idx(path)
    assert out.dtype == np.uint8 and np.array_equal(out, array)


def test_idx_reader_rejects_bad_magic(tmp_path):
    path = tmp_path / "bad"
    path.write_bytes(b"\x12\x34\x08\x01" + b"\x00" * 20)
    with pytest.raises(DataError, match="not an IDX file"):
        fm.read_idx(path)


def test_idx_reader_rejects_truncated_data(tmp_path):
    path = write_idx(tmp_path / "t", np.zeros((4, 28, 28)), gz=False)
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataError, match="truncated or corrupt"):
        fm.read_idx(path)


def test_idx_reader_rejects_broken_gzip(tmp_path):
    path = write_idx(tmp_path / "g", np.zeros((4, 28, 28)), gz=True)
    path.write_bytes(path.read_bytes()[:30])
    with pytest.raises(DataError, match="cannot read IDX file"):
        fm.read_idx(path)


def test_load_split_reads_plain_and_gz(tmp_path):
    for gz in (False, True):
        raw = make_raw_dir(tmp_path / str(gz), gz=gz)
        images, labels = fm.load_split(raw, "val")
        assert images.shape == (12, 28, 28) and images.dtype == np.uint8
        assert labels.dtype == np.int64 and labels.tolist() == [i % 10 for i in range(12)]


def test_load_split_rejects_mismatched_counts(tmp_path):
    raw = make_raw_dir(tmp_path)
    write_idx(raw / "train-labels-idx1-ubyte", np.zeros(5), gz=True)
    with pytest.raises(DataError, match="labels for 30 images"):
        fm.load_split(raw, "train")


def test_missing_source_dir_gives_clear_error(tmp_path):
    with pytest.raises(DataError, match="is not a folder.*data.source_dir"):
        fm.locate_or_fetch_fashion_mnist(str(tmp_path / "nope"), str(tmp_path / "cache"))
    raw = make_raw_dir(tmp_path / "partial")
    (raw / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="lacks t10k-labels-idx1-ubyte"):
        fm.locate_or_fetch_fashion_mnist(str(raw), str(tmp_path / "cache"))


def test_source_dir_then_cache_are_used_without_fetching(tmp_path, monkeypatch):
    def no_fetch(raw_dir):
        raise AssertionError("must not fetch")

    monkeypatch.setattr(fm, "_fetch_from_apt", no_fetch)
    monkeypatch.setattr(fm, "_fetch_from_http", no_fetch)
    source = make_raw_dir(tmp_path / "src")
    assert fm.locate_or_fetch_fashion_mnist(str(source), str(tmp_path / "cache")) == source
    cached = make_raw_dir(tmp_path / "cache" / "fashion-mnist" / "raw", gz=False)
    assert fm.locate_or_fetch_fashion_mnist(None, str(tmp_path / "cache")) == cached


def _apt_fails(raw_dir):
    raise RuntimeError("apt-get/dpkg-deb not available")


def test_fetch_falls_back_to_http(tmp_path, monkeypatch):
    monkeypatch.setattr(fm, "_fetch_from_apt", _apt_fails)
    monkeypatch.setattr(fm, "_fetch_from_http", lambda raw_dir: make_raw_dir(raw_dir))
    raw = fm.locate_or_fetch_fashion_mnist(None, str(tmp_path), system_packages=True)
    assert raw == tmp_path / "fashion-mnist" / "raw" and not fm.missing_idx_files(raw)


def test_without_system_packages_apt_is_never_run_and_the_error_says_how(tmp_path, monkeypatch):
    tried = []
    monkeypatch.setattr(fm, "_fetch_from_apt", lambda raw_dir: tried.append(raw_dir))
    monkeypatch.setattr(fm, "URL_BASE", "http://127.0.0.1:9/")  # nothing listens on the discard port
    with pytest.raises(DataError, match="was not tried: `python -m data_pipeline fetch fashion-mnist`"):
        fm.locate_or_fetch_fashion_mnist(None, str(tmp_path))
    assert tried == []


def test_failed_fetch_names_every_attempt_and_leaves_no_partial_files(tmp_path, monkeypatch):
    monkeypatch.setattr(fm, "_fetch_from_apt", _apt_fails)
    monkeypatch.setattr(fm, "URL_BASE", "http://127.0.0.1:9/")  # nothing listens on the discard port
    with pytest.raises(DataError) as err:
        fm.locate_or_fetch_fashion_mnist(None, str(tmp_path), system_packages=True)
    message = str(err.value)
    assert "apt package dataset-fashion-mnist: apt-get/dpkg-deb not available" in message
    assert "HTTP http://127.0.0.1:9/" in message and "data.source_dir" in message
    assert list((tmp_path / "fashion-mnist" / "raw").iterdir()) == []


def test_prepare_writes_both_splits_and_is_idempotent(tmp_path):
    raw = make_raw_dir(tmp_path / "raw")
    out = tmp_path / "shards"
    dirs = prepare_fashion_mnist_shards(out, str(raw), str(tmp_path / "cache"), samples_per_shard=8, limit=20,
                                        progress=False)
    assert dirs == {"train": str(out / "train"), "val": str(out / "val")}
    train, val = verify_shards(dirs["train"]), verify_shards(dirs["val"])
    assert (train.num_samples, len(train.shards), val.num_samples) == (20, 3, 12)
    assert train.dataset == "fashion-mnist" and train.dataset_info["class_names"] == fm.CLASS_NAMES
    stamp = (out / "train" / "manifest.json").stat().st_mtime_ns
    prepare_fashion_mnist_shards(out, str(tmp_path / "gone"), str(tmp_path / "cache"), 8, 20)  # no-op
    assert (out / "train" / "manifest.json").stat().st_mtime_ns == stamp


def _cli(*args):
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.run([sys.executable, "-m", "data_pipeline", *args], capture_output=True, text=True,
                          env=env, cwd=PROJECT_ROOT, timeout=120)


def test_cli_writes_shards(tmp_path):
    raw = make_raw_dir(tmp_path / "raw", gz=False)
    done = _cli("write", "fashion-mnist", "--out", str(tmp_path / "out"), "--source-dir", str(raw),
                "--samples-per-shard", "10", "--limit", "25")
    assert done.returncode == 0, done.stderr
    assert "train: 3 shards, 25 samples" in done.stdout and "val: 2 shards, 12 samples" in done.stdout
    manifest = json.loads((tmp_path / "out" / "train" / "manifest.json").read_text())
    assert manifest["num_samples"] == 25 and [s["num_samples"] for s in manifest["shards"]] == [10, 10, 5]
    assert read_manifest(tmp_path / "out" / "val").split == "val"


def test_cli_fetch_prints_folder_and_errors_are_one_line(tmp_path):
    raw = make_raw_dir(tmp_path / "raw")
    done = _cli("fetch", "fashion-mnist", "--source-dir", str(raw))
    assert done.returncode == 0 and done.stdout.strip() == str(raw)
    done = _cli("write", "fashion-mnist", "--out", str(tmp_path / "o"), "--source-dir", str(tmp_path / "missing"))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1
