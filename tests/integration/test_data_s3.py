"""Shard sets in S3-compatible object storage, over real HTTP to SeaweedFS's S3 gateway on 127.0.0.1."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import time

import boto3
import numpy as np
import pytest
from botocore.exceptions import ConnectionClosedError

from data_pipeline import (
    ActionSpace,
    DataError,
    S3Options,
    build_sequence_loader,
    read_manifest,
    upload_shard_set,
    verify_shards,
    write_shards,
)
from data_pipeline.sources.affine import AffineComposer
from data_pipeline.storage import S3Store, expand_urls
from tests.helpers.paths import PROJECT_ROOT
from tests.helpers.runs import free_port, same_batch

INFO = {"num_classes": 10, "class_names": [str(i) for i in range(10)], "mean": 0.5, "std": 0.25}


def _data(n=40, side=8):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(n, side, side), dtype=np.uint8), np.arange(n) % 10


def _loader(location, s3=None, rank=0, world=1):
    return build_sequence_loader(location, composer=functools.partial(AffineComposer.for_shards, ActionSpace(), 12),
                                 num_views=3, batch_size=4, rank=rank, world_size=world, num_workers=0, seed=7,
                                 train=True, shuffle_buffer=16, s3=s3)


def _keys(endpoint, bucket, prefix=""):
    listing = boto3.client("s3", endpoint_url=endpoint).list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(obj["Key"] for obj in listing.get("Contents", []))


def test_write_to_s3_uploads_shards_then_manifest_and_reads_back(s3_endpoint, s3_bucket, tmp_path):
    s3 = S3Options(endpoint_url=s3_endpoint)
    url = f"s3://{s3_bucket}/fm/train"
    manifest = write_shards(*_data(), url, samples_per_shard=10, dataset_info=INFO, progress=False, s3=s3)
    shards = [f"fm/train/shard-00000{i}.tar" for i in range(4)]
    assert _keys(s3_endpoint, s3_bucket) == ["fm/train/manifest.json"] + shards
    assert read_manifest(url, s3) == manifest
    assert verify_shards(url, s3) == manifest


def test_loader_streams_the_same_batches_from_s3_as_from_disk(s3_endpoint, s3_bucket, tmp_path):
    s3 = S3Options(endpoint_url=s3_endpoint)
    local = tmp_path / "set"
    write_shards(*_data(), local, samples_per_shard=10, dataset_info=INFO, progress=False)
    upload_shard_set(local, f"s3://{s3_bucket}/set", s3, progress=False)
    for rank in range(2):
        from_disk = list(_loader(local, rank=rank, world=2))
        from_s3 = list(_loader(f"s3://{s3_bucket}/set", s3, rank=rank, world=2))
        assert len(from_s3) == len(from_disk) > 0
        for a, b in zip(from_disk, from_s3):
            assert same_batch(a, b)


def test_upload_replaces_a_set_and_removes_shards_it_no_longer_lists(s3_endpoint, s3_bucket, tmp_path):
    s3 = S3Options(endpoint_url=s3_endpoint)
    images, labels = _data()
    write_shards(images, labels, tmp_path / "big", samples_per_shard=10, dataset_info=INFO, progress=False)
    write_shards(images[:15], labels[:15], tmp_path / "small", samples_per_shard=10, dataset_info=INFO,
                 progress=False)
    upload_shard_set(tmp_path / "big", f"s3://{s3_bucket}/set", s3, progress=False)
    upload_shard_set(tmp_path / "small", f"s3://{s3_bucket}/set", s3, progress=False)
    assert _keys(s3_endpoint, s3_bucket) == ["set/manifest.json", "set/shard-000000.tar", "set/shard-000001.tar"]
    assert verify_shards(f"s3://{s3_bucket}/set", s3).num_samples == 15


def test_a_folder_marker_object_is_not_listed_as_a_file(s3_endpoint, s3_bucket):
    """pyarrow's create_dir (Ray Train's checkpoint folders) and S3 consoles write an empty `folder/` object."""
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.put_object(Bucket=s3_bucket, Key="ckpt/", Body=b"")
    client.put_object(Bucket=s3_bucket, Key="ckpt/a.bin", Body=b"abc")
    listing = S3Store(S3Options(endpoint_url=s3_endpoint)).list_sizes(f"s3://{s3_bucket}/ckpt")
    assert listing == {f"s3://{s3_bucket}/ckpt/a.bin": 3}


def test_cli_writes_to_s3_and_verifies(s3_endpoint, s3_bucket, tmp_path):
    from tests.helpers.raw_datasets import make_raw_dir

    raw = make_raw_dir(tmp_path / "raw")
    url = f"s3://{s3_bucket}/fashion-mnist"

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "data_pipeline", *args, "--s3-endpoint-url", s3_endpoint],
                              capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120,
                              env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})

    done = cli("write", "fashion-mnist", "--out", url, "--source-dir", str(raw), "--samples-per-shard", "8",
               "--limit", "20")
    assert done.returncode == 0, done.stderr
    assert "train: 3 shards, 20 samples" in done.stdout and f"-> {url}/val" in done.stdout
    done = cli("verify", f"{url}/train")
    assert done.returncode == 0 and "ok: 3 shards, 20 samples" in done.stdout
    client, key = boto3.client("s3", endpoint_url=s3_endpoint), "fashion-mnist/train/shard-000001.tar"
    size = client.head_object(Bucket=s3_bucket, Key=key)["ContentLength"]
    client.put_object(Bucket=s3_bucket, Key=key, Body=b"x" * size)  # same size, other bytes: only the checksum sees it
    done = cli("verify", f"{url}/train")
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "shard-000001.tar does not match its manifest checksum" in done.stderr
    client.put_object(Bucket=s3_bucket, Key=key, Body=b"replaced")  # a size mismatch is caught by the listing
    done = cli("verify", f"{url}/train")
    assert done.returncode == 2 and f"shard-000001.tar has 8 bytes but the manifest says {size}" in done.stderr


def test_missing_bucket_manifest_and_shard_are_one_clear_line(s3_endpoint, s3_bucket, tmp_path):
    s3 = S3Options(endpoint_url=s3_endpoint)
    with pytest.raises(DataError, match="bucket 'no-such-bucket' does not exist at http://127.0.0.1"):
        read_manifest("s3://no-such-bucket/set", s3)
    with pytest.raises(DataError, match=f"no shard set at s3://{s3_bucket}/nothing-here"):
        read_manifest(f"s3://{s3_bucket}/nothing-here", s3)
    write_shards(*_data(), f"s3://{s3_bucket}/set", samples_per_shard=10, dataset_info=INFO, progress=False, s3=s3)
    boto3.client("s3", endpoint_url=s3_endpoint).delete_object(Bucket=s3_bucket, Key="set/shard-000002.tar")
    missing = f"shard s3://{s3_bucket}/set/shard-000002.tar listed in the manifest is missing"
    with pytest.raises(DataError, match=missing):
        list(_loader(f"s3://{s3_bucket}/set", s3))


def test_unreachable_endpoint_fails_fast_with_a_clear_message():
    s3 = S3Options(endpoint_url=f"http://127.0.0.1:{free_port()}", connect_timeout_s=1, max_attempts=2)
    start = time.monotonic()
    with pytest.raises(DataError, match="cannot reach the object store .* after 2 attempts; check the endpoint URL"):
        read_manifest("s3://bucket/set", s3)
    assert time.monotonic() - start < 30


def test_a_connection_reset_mid_shard_resumes_where_it_broke(s3_endpoint, s3_bucket):
    s3 = S3Options(endpoint_url=s3_endpoint)
    payload = np.random.default_rng(1).integers(0, 256, size=3 << 20, dtype=np.uint8).tobytes()
    boto3.client("s3", endpoint_url=s3_endpoint).put_object(Bucket=s3_bucket, Key="blob", Body=payload)
    stream = S3Store(s3).open(f"s3://{s3_bucket}/blob")
    reader = stream.raw
    real_body = reader.body

    class BreaksOnce:  # the first body dies after 1 MiB, as a dropped connection does
        sent = 0

        def read(self, n):
            if self.sent >= 1 << 20:
                raise ConnectionClosedError(endpoint_url=s3_endpoint)
            data = real_body.read(min(n, (1 << 20) - self.sent))
            self.sent += len(data)
            return data

        def close(self):
            real_body.close()

    reader.body = BreaksOnce()
    assert stream.read() == payload
    assert reader.resumes == 1


def test_brace_patterns_expand_to_shard_lists():
    assert expand_urls("s3://b/p/shard-{000000..000002}.tar") == [f"s3://b/p/shard-00000{i}.tar" for i in range(3)]
    assert expand_urls("/data/{train,val}/manifest.json") == ["/data/train/manifest.json", "/data/val/manifest.json"]
