"""What the tests that train need: the smallest sensible run's overrides, the metrics every run logs, the MLflow run
and the checkpoints it left, a free port, and batch equality."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch

from tests.helpers.paths import PROJECT_ROOT

__all__ = ["DATA_CACHE", "PROBE_METRICS", "PROJECT_ROOT", "free_port", "run_checkpoints", "same_batch", "the_run",
           "tiny_overrides"]

# The user cache the real Fashion-MNIST files are fetched into once (the `fashion_mnist_shards` fixture).
DATA_CACHE = Path(os.environ.get("SEQJEPA_TEST_CACHE", "~/seq-jepa/data/cache")).expanduser()


def tiny_overrides(shards: Path, storage: Path, mlflow_uri: str, name: str, method: str = "seq_jepa") -> list[str]:
    """A few real steps of the whole pipeline at the smallest sensible size, of `method` (model.method)."""
    small_heads = ["seq_jepa.num_layers=1", "seq_jepa.pred_hidden=64"] if method == "seq_jepa" else []
    return [
        f"data.shards={shards}", "data.prepare=false", "data.batch_size=32", "data.val_batch_size=64",
        "data.loader_workers=0", "data.shuffle_buffer=100", f"model.method={method}",
        "model.encoder=convnet", "model.conv_width=8", "model.seq_len=2", "model.action_proj_dim=16",
        *small_heads, "probe.hidden=32", "probe.val_batches=2",
        "train.epochs=2", "train.steps_per_epoch=3", "train.log_every_steps=1",
        f"run.storage_path={storage}", f"run.name={name}", f"tracking.tracking_uri={mlflow_uri}",
        f"data.cache_dir={Path(storage).parent / 'cache'}",  # the evaluation's feature cache: not the user's
    ]


# What every training run logs to MLflow (online probes, loss, throughput, collapse monitor).
PROBE_METRICS = ["val/inv/acc_agg", "val/inv/acc_enc", "val/equi/r2_enc", "val/equi/r2_agg", "val/equi/r2_enc/rotation",
                 "train/loss", "train/samples_per_s", "train/data_wait_frac", "val/eff_rank_enc"]


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


def same_batch(a: dict, b: dict) -> bool:
    """Two loader batches hold the same keys and equal values (tensors compared exactly)."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) if torch.is_tensor(a[k]) else a[k] == b[k] for k in a)
