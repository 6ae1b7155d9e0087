"""The object store failing transiently (connection resets, 5xx, bodies cut mid-stream, slow responses)
is retried: a fault-injecting proxy sits between boto3 and the S3 server (SeaweedFS) on 127.0.0.1, and what
the training loader reads through it is the same, batch for batch, as what it reads directly."""

from __future__ import annotations

import functools
import time

import pytest
import torch

from data_pipeline import ActionSpace, DataError, S3Options, build_sequence_loader, read_manifest, upload_shard_set
from data_pipeline.sources.affine import AffineComposer
from data_pipeline.storage import S3Store
from data_pipeline.transforms import CANVAS_MARGIN
from tests.helpers.object_store import create_bucket
from tests.helpers.s3_fault_proxy import KINDS, FaultProxy

# One request in three fails, each kind in turn: cycled over every object GET and listing.
EVERY_THIRD = ["ok", "ok", "reset", "ok", "ok", "500", "ok", "ok", "cut", "ok", "ok", "503", "ok", "ok", "slow"]


@pytest.fixture(scope="module")
def fm_url(s3_endpoint, fashion_mnist_shards) -> str:
    """s3:// URL of the real Fashion-MNIST train/ and val/ shard sets, uploaded straight to the server."""
    bucket = create_bucket(s3_endpoint, prefix="faults")
    for split in ("train", "val"):
        upload_shard_set(fashion_mnist_shards / split, f"s3://{bucket}/fm/{split}", S3Options(endpoint_url=s3_endpoint),
                         progress=False)
    return f"s3://{bucket}/fm"


def _loader(shard_dir: str, s3: S3Options, num_workers: int, train: bool = True):
    composer = functools.partial(AffineComposer.for_shards, ActionSpace(), 28 + CANVAS_MARGIN)
    return build_sequence_loader(shard_dir, composer=composer, num_views=3, batch_size=32, rank=0, world_size=1,
                                 num_workers=num_workers, seed=3, train=train, shuffle_buffer=100, s3=s3)


def _short_run(url: str, s3: S3Options, num_workers: int) -> list[dict]:
    """Every batch a short training run reads: two train epochs, then one validation pass."""
    train, batches = _loader(f"{url}/train", s3, num_workers), []
    for epoch in range(2):
        train.set_epoch(epoch)
        batches += list(train)
    return batches + list(_loader(f"{url}/val", s3, num_workers, train=False))


def _one_clear_line(err: pytest.ExceptionInfo, url: str, endpoint: str) -> str:
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message
    assert url in message and f"endpoint {endpoint}" in message
    return message


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_run_through_a_faulty_store_reads_the_same_batches(s3_endpoint, fm_url, num_workers):
    direct = _short_run(fm_url, S3Options(endpoint_url=s3_endpoint), num_workers)
    with FaultProxy(s3_endpoint, EVERY_THIRD, targets=("get", "list")) as proxy:
        faulty = _short_run(fm_url, S3Options(endpoint_url=proxy.url, max_attempts=4), num_workers)
        counts = proxy.counts()
    assert all(counts[kind] >= 1 for kind in KINDS), counts
    assert sum(len(b["label"]) for b in faulty) == sum(len(b["label"]) for b in direct) > 0
    assert len(faulty) == len(direct)
    for ours, theirs in zip(faulty, direct):
        assert ours.keys() == theirs.keys()
        for key, value in ours.items():  # views, actions, labels (tensors) and the samples' keys
            assert torch.equal(value, theirs[key]) if torch.is_tensor(value) else value == theirs[key], key


@pytest.mark.parametrize("kind", ["reset", "500", "503"])
def test_a_store_that_keeps_failing_ends_in_one_clear_line(s3_endpoint, fm_url, kind):
    with FaultProxy(s3_endpoint, [kind], only=".tar") as proxy:  # the manifest and listing go through
        loader = _loader(f"{fm_url}/train", S3Options(endpoint_url=proxy.url, max_attempts=2), 0, train=False)
        start = time.monotonic()
        with pytest.raises(DataError) as err:
            list(loader)
        assert time.monotonic() - start < 10
        assert proxy.counts()[kind] == 2  # max_attempts counts the first attempt
    _one_clear_line(err, f"{fm_url}/train/shard-000000.tar", proxy.url)


def test_a_body_that_keeps_breaking_mid_stream_ends_in_one_clear_line(s3_endpoint, fm_url):
    url = f"{fm_url}/train/shard-000000.tar"
    with FaultProxy(s3_endpoint, ["cut"]) as proxy:
        start = time.monotonic()
        with pytest.raises(DataError, match="kept failing .* after 3 resumes") as err:
            S3Store(S3Options(endpoint_url=proxy.url, max_attempts=3)).read_bytes(url)
        assert time.monotonic() - start < 10
        assert proxy.counts()["cut"] == 3
    _one_clear_line(err, url, proxy.url)


@pytest.mark.filterwarnings("ignore:skipping corrupt data")
def test_a_shard_that_keeps_breaking_mid_stream_is_a_store_failure_not_corrupt_data(s3_endpoint, fm_url):
    with FaultProxy(s3_endpoint, ["cut"], only=".tar") as proxy:
        loader = _loader(f"{fm_url}/train", S3Options(endpoint_url=proxy.url, max_attempts=2), 0, train=False)
        with pytest.raises(DataError, match="kept failing"):
            list(loader)
    assert loader.corrupt_samples == 0


def test_responses_slower_than_usual_but_within_the_read_timeout_just_take_longer(s3_endpoint, fm_url):
    url = f"{fm_url}/train/shard-000001.tar"
    expected = S3Store(S3Options(endpoint_url=s3_endpoint)).read_bytes(url)
    with FaultProxy(s3_endpoint, ["slow"], slow_s=0.5) as proxy:
        assert S3Store(S3Options(endpoint_url=proxy.url, read_timeout_s=1)).read_bytes(url) == expected
        assert proxy.counts()["requests"] == proxy.counts()["slow"] == 1  # no retry was needed


def test_a_response_slower_than_the_read_timeout_is_retried(s3_endpoint, fm_url):
    url = f"{fm_url}/train/shard-000002.tar"
    expected = S3Store(S3Options(endpoint_url=s3_endpoint)).read_bytes(url)
    with FaultProxy(s3_endpoint, ["slow", "ok"], slow_s=2) as proxy:
        assert S3Store(S3Options(endpoint_url=proxy.url, read_timeout_s=0.5)).read_bytes(url) == expected
        assert proxy.counts()["requests"] == 2 and proxy.counts()["slow"] == 1


def test_a_store_slower_than_the_read_timeout_every_time_ends_in_one_clear_line(s3_endpoint, fm_url):
    with FaultProxy(s3_endpoint, ["slow"], slow_s=2) as proxy:
        s3 = S3Options(endpoint_url=proxy.url, read_timeout_s=0.5, max_attempts=2)
        start = time.monotonic()
        with pytest.raises(DataError) as err:
            read_manifest(f"{fm_url}/train", s3)
        assert time.monotonic() - start < 5
        assert proxy.counts()["slow"] == 2  # max_attempts counts the first attempt
    _one_clear_line(err, f"{fm_url}/train/manifest.json", proxy.url)
