"""Access control on a real object store: SeaweedFS checks every request's signature and key against its
identities (tests/helpers/object_store.py: the admin key of the environment, a read-only key, a key allowed nothing).
A denied read or write is one line naming the object and the endpoint; a read-only key trains from shards
but cannot hold the run's checkpoints."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from data_pipeline import DataError, S3Options, read_manifest, upload_shard_set, verify_shards, write_shards
from data_pipeline.storage import S3Store
from tests.helpers.object_store import NO_ACCESS, READ_ONLY, Key, client, write_credentials_file
from tests.helpers.paths import PROJECT_ROOT
from tests.helpers.runs import tiny_overrides

INFO = {"num_classes": 10, "class_names": [str(i) for i in range(10)], "mean": 0.5, "std": 0.25}


def _data(n=40, side=8):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(n, side, side), dtype=np.uint8), np.arange(n) % 10


@pytest.fixture
def shard_set(s3_endpoint, s3_bucket) -> str:
    """A small shard set written with the admin key."""
    url = f"s3://{s3_bucket}/set"
    write_shards(*_data(), url, samples_per_shard=10, dataset_info=INFO, progress=False,
                 s3=S3Options(endpoint_url=s3_endpoint))
    return url


@pytest.fixture
def profiles(tmp_path, monkeypatch) -> None:
    """AWS profiles `read-only` and `no-access` (what data.s3_profile names); an explicit profile wins over the
    environment's key."""
    path = write_credentials_file(tmp_path / "credentials", {"read-only": READ_ONLY, "no-access": NO_ACCESS})
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(path))


def _keys(endpoint: str, bucket: str) -> list[str]:
    return sorted(obj["Key"] for obj in client(endpoint).list_objects_v2(Bucket=bucket).get("Contents", []))


def test_a_key_allowed_nothing_is_denied_each_read_in_one_line(s3_endpoint, shard_set, profiles):
    assert read_manifest(shard_set, S3Options(endpoint_url=s3_endpoint)).num_samples == 40  # the admin key reads
    s3 = S3Options(endpoint_url=s3_endpoint, profile="no-access")
    denied = f"\\(endpoint {s3_endpoint}\\); check the credentials and the bucket policy$"
    manifest = f"{shard_set}/manifest.json"
    with pytest.raises(DataError, match=f"^access denied \\(AccessDenied\\) to read {manifest} {denied}"):
        read_manifest(shard_set, s3)
    with pytest.raises(DataError, match=f"^access denied \\(AccessDenied\\) to list {shard_set} {denied}"):
        S3Store(s3).list_sizes(shard_set)
    with pytest.raises(DataError, match=f"^access denied \\(403\\) to look up {manifest} {denied}"):
        S3Store(s3).exists(manifest)


def test_a_read_only_key_reads_and_verifies_but_every_write_is_denied(s3_endpoint, s3_bucket, shard_set, profiles,
                                                                      tmp_path):
    s3 = S3Options(endpoint_url=s3_endpoint, profile="read-only")
    assert verify_shards(shard_set, s3).num_samples == 40  # every shard read and checksummed
    before = _keys(s3_endpoint, s3_bucket)
    with pytest.raises(DataError, match=f"^access denied \\(AccessDenied\\) to upload to s3://{s3_bucket}/other/"
                                        f"shard-000000.tar \\(endpoint {s3_endpoint}\\)"):
        write_shards(*_data(), f"s3://{s3_bucket}/other", samples_per_shard=10, dataset_info=INFO, progress=False,
                     s3=s3)
    write_shards(*_data(), tmp_path / "local", samples_per_shard=10, dataset_info=INFO, progress=False)
    with pytest.raises(DataError, match=f"^access denied \\(AccessDenied\\) to delete {shard_set}/manifest.json"):
        upload_shard_set(tmp_path / "local", shard_set, s3, progress=False)  # replacing a set removes its manifest
    assert _keys(s3_endpoint, s3_bucket) == before


WRITE_SHARDS_HINT = "write shards with `python -m data_pipeline write"


def test_a_denied_read_of_the_shards_is_not_told_to_write_them_but_missing_shards_are(s3_endpoint, s3_bucket,
                                                                                      profiles, tmp_path):
    """The trainer's pre-flight check (`ensure_dataset`): how to write shards helps where there are none, not where
    the credentials may not read them."""
    from trainer.config import load_config
    from trainer.launch import ensure_dataset

    url = f"s3://{s3_bucket}/fashion-mnist"
    for split in ("train", "val"):
        write_shards(*_data(), f"{url}/{split}", samples_per_shard=10, dataset_info=INFO, dataset="fashion-mnist",
                     split=split, progress=False, s3=S3Options(endpoint_url=s3_endpoint))

    def check(shards: str, profile: str | None = None) -> str:
        overrides = [f"data.shards={shards}", "data.prepare=false", f"data.s3_endpoint_url={s3_endpoint}"]
        with pytest.raises(DataError) as err:
            ensure_dataset(load_config(None, overrides + ([f"data.s3_profile={profile}"] if profile else [])))
        return str(err.value)

    denied = check(url, "no-access")
    assert denied.startswith(f"access denied (AccessDenied) to read {url}/train/manifest.json (endpoint "
                             f"{s3_endpoint}); check the credentials and the bucket policy"), denied
    assert WRITE_SHARDS_HINT not in denied and "data.prepare=true" not in denied
    for missing in (f"s3://{s3_bucket}/nothing-here", str(tmp_path / "nothing")):
        message = check(missing)
        assert message.startswith(f"no shard set at {missing}/train (manifest.json is missing)"), message
        assert f"{WRITE_SHARDS_HINT} fashion-mnist --out DIR` or set data.prepare=true" in message


def _cli(key: Key, *args: str) -> subprocess.CompletedProcess:
    """`python -m data_pipeline ...` with `key` in the environment, as a user's shell has it."""
    return subprocess.run([sys.executable, "-m", "data_pipeline", *args], capture_output=True, text=True,
                          cwd=PROJECT_ROOT, timeout=120,
                          env={**os.environ, **key.env(), "PYTHONPATH": str(PROJECT_ROOT)})


def test_verify_with_a_key_allowed_nothing_is_one_error_line_and_exit_code_2(s3_endpoint, shard_set):
    done = _cli(READ_ONLY, "verify", shard_set, "--s3-endpoint-url", s3_endpoint)
    assert done.returncode == 0 and "ok: 4 shards, 40 samples" in done.stdout, done.stderr
    done = _cli(NO_ACCESS, "verify", shard_set, "--s3-endpoint-url", s3_endpoint)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: access denied (AccessDenied) to read ") and done.stderr.count("\n") == 1
    assert f"{shard_set}/manifest.json (endpoint {s3_endpoint})" in done.stderr


@pytest.mark.integration
def test_a_read_only_key_trains_from_shards_but_cannot_checkpoint_into_the_bucket(
        fashion_mnist_shards, s3_endpoint, s3_bucket, tmp_path, mlflow_uri):
    """Two real runs with the read-only key (its own Ray instance inherits it, as pods get theirs): local
    storage trains; storage in the shards' bucket is refused before anything starts, in one line."""
    url = f"s3://{s3_bucket}/fashion-mnist"
    for split in ("train", "val"):
        upload_shard_set(fashion_mnist_shards / split, f"{url}/{split}", S3Options(endpoint_url=s3_endpoint),
                         progress=False)
    env = {**os.environ, **READ_ONLY.env(), "AWS_ENDPOINT_URL": s3_endpoint, "PYTHONPATH": str(PROJECT_ROOT)}
    env.pop("RAY_ADDRESS", None)

    def run(storage: str, name: str) -> subprocess.CompletedProcess:
        overrides = tiny_overrides(url, tmp_path / "runs", mlflow_uri, name)
        overrides += ["scaling.num_workers=2", "train.epochs=1", "tracking.log_model=false",
                      f"run.storage_path={storage}"]
        return subprocess.run([sys.executable, "trainer/run.py", *overrides], cwd=PROJECT_ROOT, env=env,
                              capture_output=True, text=True, timeout=600)

    done = run(str(tmp_path / "runs"), "read-only-local")
    assert done.returncode == 0, done.stderr[-3000:]
    assert any((tmp_path / "runs" / "read-only-local").glob("checkpoint_*/.metadata"))
    before = _keys(s3_endpoint, s3_bucket)

    storage = f"s3://{s3_bucket}/runs"
    done = run(storage, "read-only-s3")
    assert done.returncode == 2, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert errors[0].startswith(f"error: cannot write the run's checkpoints to run.storage_path={storage} "
                                f"(endpoint {s3_endpoint}): OSError: ")
    assert f"in bucket '{s3_bucket}'" in errors[0] and "ACCESS_DENIED" in errors[0]
    assert _keys(s3_endpoint, s3_bucket) == before  # nothing was written
