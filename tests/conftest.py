"""Shared fixtures and hooks: real Fashion-MNIST shards, a real local Ray instance, a real MLflow store, and a
real S3 server on 127.0.0.1 (SeaweedFS's S3 gateway, tests/helpers/object_store.py). The plain helpers the tests
share are in tests/helpers/."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.helpers import object_store
from tests.helpers.paths import PROJECT_ROOT
from tests.helpers.runs import DATA_CACHE

os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "120")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# Fake credentials for the local S3 server, set before Ray starts so its workers inherit them; they
# also keep any test from ever reaching a real AWS account.
for _key in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
    os.environ.pop(_key, None)
os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                   "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": os.devnull,
                   "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_EC2_METADATA_DISABLED": "true"})


@pytest.fixture(scope="session")
def fashion_mnist_shards(tmp_path_factory) -> Path:
    """A small shard set of the real Fashion-MNIST images (fetched once into the user cache)."""
    from data_pipeline import prepare_fashion_mnist_shards

    out = tmp_path_factory.mktemp("shards") / "fashion-mnist"
    prepare_fashion_mnist_shards(out, None, str(DATA_CACHE), samples_per_shard=400, limit=1600,
                                 system_packages=True)
    return out


@pytest.fixture(scope="session")
def ray_local():
    import ray

    from sweeps.run import TRIAL_SLOT

    # One trial slot, as a sweep's own local instance with max_concurrent_trials=1 has.
    ray.init(num_cpus=2, resources={TRIAL_SLOT: 1},
             runtime_env={"env_vars": {"PYTHONPATH": str(PROJECT_ROOT)}})
    yield ray
    ray.shutdown()


@pytest.fixture
def mlflow_uri(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory):
    """SeaweedFS's S3 gateway on 127.0.0.1 for the whole session, the environment's key as its admin key
    (tests/helpers/object_store.py); skipped, saying why, where its `weed` binary cannot run."""
    yield from object_store.serve(tmp_path_factory.mktemp("seaweedfs"), object_store.Key.from_env())


@pytest.fixture(scope="session")
def s3_endpoint(seaweedfs) -> str:
    """URL of the session's S3 server (boto3 talks real HTTP to it)."""
    return seaweedfs.url


@pytest.fixture
def s3_bucket(s3_endpoint) -> str:
    """A new empty bucket on the test server; returns its name."""
    return object_store.create_bucket(s3_endpoint)


def pytest_runtest_setup(item):
    """Tests marked `gpu` need CUDA: on a machine without it they skip and say where they run."""
    if item.get_closest_marker("gpu") is not None and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (torch.cuda.is_available() is False here); scripts/gpu_check.sh runs the "
                    "`gpu` tests on a GPU machine")
