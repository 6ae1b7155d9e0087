"""Shared fixtures: real Fashion-MNIST shards, a real local Ray instance, a real MLflow store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "120")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DATA_CACHE = Path(os.environ.get("SEQJEPA_TEST_CACHE", "~/seq-jepa/data/cache")).expanduser()


@pytest.fixture(scope="session")
def fashion_mnist_shards(tmp_path_factory) -> Path:
    """A small shard set of the real Fashion-MNIST images (fetched once into the user cache)."""
    from data_pipeline import prepare_fashion_mnist_shards

    out = tmp_path_factory.mktemp("shards") / "fashion-mnist"
    prepare_fashion_mnist_shards(out, None, str(DATA_CACHE), samples_per_shard=400, limit=1600)
    return out


@pytest.fixture(scope="session")
def ray_local():
    import ray

    ray.init(num_cpus=2, runtime_env={"env_vars": {"PYTHONPATH": str(PROJECT_ROOT)}})
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
    ]
