"""Shared fixtures: real Fashion-MNIST shards, a real local Ray instance, a real MLflow store, and a
real S3 server on 127.0.0.1 (SeaweedFS's S3 gateway, tests/object_store.py)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch

from tests import object_store

os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "120")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# Fake credentials for the local S3 server, set before Ray starts so its workers inherit them; they
# also keep any test from ever reaching a real AWS account.
for _key in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
    os.environ.pop(_key, None)
os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                   "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": os.devnull,
                   "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_EC2_METADATA_DISABLED": "true"})

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DATA_CACHE = Path(os.environ.get("SEQJEPA_TEST_CACHE", "~/seq-jepa/data/cache")).expanduser()


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


def tiny_overrides(shards: Path, storage: Path, mlflow_uri: str, name: str) -> list[str]:
    """A few real steps of the whole pipeline at the smallest sensible size."""
    return [
        f"data.shards={shards}", "data.prepare=false", "data.batch_size=32", "data.val_batch_size=64",
        "data.loader_workers=0", "data.shuffle_buffer=100",
        "model.encoder=convnet", "model.conv_width=8", "model.seq_len=2", "model.action_proj_dim=16",
        "model.num_layers=1", "model.pred_hidden=64", "probe.hidden=32", "probe.val_batches=2",
        "train.epochs=2", "train.steps_per_epoch=3", "train.log_every_steps=1",
        f"run.storage_path={storage}", f"run.name={name}", f"tracking.tracking_uri={mlflow_uri}",
        f"data.cache_dir={Path(storage).parent / 'cache'}",  # the evaluation's feature cache: not the user's
    ]


# What every training run logs to MLflow (online probes, loss, throughput, collapse monitor).
PROBE_METRICS = ["inv/acc_agg", "inv/acc_enc", "equi/r2_enc", "equi/r2_agg", "equi/r2_enc/rotation",
                 "train/loss", "train/samples_per_s", "train/data_wait_frac", "train/eff_rank_enc"]


def the_run(uri: str, name: str):
    """(client, run) of the one MLflow run named `name` in the seq-jepa experiment."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("seq-jepa").experiment_id],
                              filter_string=f"tags.`seq_jepa.run_name` = '{name}'")
    assert len(runs) == 1, f"expected one MLflow run named {name}, found {len(runs)}"
    return client, runs[0]


def run_checkpoints(storage: Path, name: str) -> list[Path]:
    """The checkpoint folders of run `name` under `storage`, oldest first."""
    return sorted(p for p in (storage / name).glob("checkpoint_*") if p.is_dir())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory):
    """SeaweedFS's S3 gateway on 127.0.0.1 for the whole session, the environment's key as its admin key
    (tests/object_store.py); skipped, saying why, where its `weed` binary cannot run."""
    yield from object_store.serve(tmp_path_factory.mktemp("seaweedfs"), object_store.Key.from_env())


@pytest.fixture(scope="session")
def s3_endpoint(seaweedfs) -> str:
    """URL of the session's S3 server (boto3 talks real HTTP to it)."""
    return seaweedfs.url


@pytest.fixture
def s3_bucket(s3_endpoint) -> str:
    """A new empty bucket on the test server; returns its name."""
    return object_store.create_bucket(s3_endpoint)


def same_batch(a: dict, b: dict) -> bool:
    """Two loader batches hold the same keys and equal values (tensors compared exactly)."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) if torch.is_tensor(a[k]) else a[k] == b[k] for k in a)


def pytest_runtest_setup(item):
    """Tests marked `gpu` need CUDA: on a machine without it they skip and say where they run."""
    if item.get_closest_marker("gpu") is not None and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (torch.cuda.is_available() is False here); scripts/gpu_check.sh runs the "
                    "`gpu` tests on a GPU machine")
