"""The README's "Extending" examples hold: a method is one module and one catalogue line, a dataset one source
module and one registry entry, a metric one line where it is computed, and every field of the training state is in
a checkpoint or said not to be."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tests.helpers import extending_example
from tests.helpers.runs import tiny_overrides
from trainer.config import load_config, to_dict
from trainer.errors import ConfigError
from trainer.launch import resolve_paths
from trainer.methods.catalog import CATALOG, register
from trainer.tracking import start_or_resume_run
from trainer.training.state import TrainState
from trainer.training.worker import make_worker, run_epoch


@pytest.fixture
def stripes_dataset():
    from data_pipeline.datasets import DATASETS

    DATASETS["stripes"] = extending_example.DATASET  # the one registry entry
    yield extending_example.DATASET
    del DATASETS["stripes"]


def test_a_new_dataset_is_written_validated_and_loaded_as_sequences(stripes_dataset, tmp_path):
    from data_pipeline import write_dataset
    from trainer.data import build_loader

    manifests = write_dataset("stripes", None, str(tmp_path / "shards"), progress=False)
    assert {split: m.num_samples for split, m in manifests.items()} == {"train": 64, "val": 64}
    config = load_config(None, ["data.dataset=stripes", f"data.shards={tmp_path / 'shards'}", "data.prepare=false",
                                "data.image_size=20", "data.batch_size=8", "scaling.num_workers=1",
                                "data.loader_workers=0"])
    loader = build_loader(config, "train", 0, 1)
    loader.set_epoch(0)
    batch = next(iter(loader))
    assert batch["views"].shape == (8, config.model.seq_len + 1, 1, 20, 20) and batch["views"].dtype == torch.uint8
    assert batch["rel_actions"].shape[:2] == (8, config.model.seq_len) and set(batch["label"].tolist()) <= {0, 1, 2, 3}
    with pytest.raises(ConfigError, match="data.dataset must be one of fashion-mnist, .*, got 'stripez'"):
        load_config(None, ["data.dataset=stripez"])


@pytest.fixture
def cosine_method():
    register(extending_example.ENTRY)  # the one catalogue line
    yield extending_example.ENTRY
    del CATALOG[extending_example.ENTRY.name]


def test_a_new_method_gets_its_config_section_and_its_checks(cosine_method):
    config = load_config(None, ["model.method=cosine", "cosine.width=16"])
    assert config.method.width == 16
    with pytest.raises(ConfigError, match="^cosine.width must be >= 1, got 0$"):
        load_config(None, ["model.method=cosine", "cosine.width=0"])
    with pytest.raises(ConfigError, match="^cosine.width is a setting of method cosine, but model.method=seq_jepa"):
        load_config(None, ["cosine.width=16"])
    with pytest.raises(ConfigError, match="^ema.decay is read by the methods with an EMA target"):
        load_config(None, ["model.method=cosine", "ema.decay=0.9"])


def test_a_new_method_trains_and_its_loss_term_reaches_mlflow(cosine_method, fashion_mnist_shards, tmp_path,
                                                              mlflow_uri):
    """The method's one `logs=` entry is a metric: logged per window as train/loss/similarity, with no other edit."""
    overrides = tiny_overrides(fashion_mnist_shards, tmp_path / "runs", mlflow_uri, "cosine", method="cosine")
    config = resolve_paths(load_config(None, overrides + ["cosine.width=16", "scaling.num_workers=1",
                                                          "train.epochs=1", "train.log_every_steps=3"]))
    run_id, _ = start_or_resume_run(config, mlflow_uri)
    worker = make_worker({"config": to_dict(config), "mlflow": {"tracking_uri": mlflow_uri, "run_id": run_id},
                          "stop_signal": None}, 0, 1, torch.device("cpu"))
    worker.begin_epoch(0)
    assert not run_epoch(worker)
    worker.logger.flush()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_uri)
    history = {key: client.get_metric_history(run_id, key) for key in
               ("train/loss", "train/loss/similarity", "train/grad_norm")}
    assert all(len(points) == 1 and points[0].step == 3 for points in history.values()), history
    similarity, loss = history["train/loss/similarity"][0].value, history["train/loss"][0].value
    assert abs(loss - (1 - similarity)) < 1e-6 and history["train/grad_norm"][0].value > 0
    assert client.get_run(run_id).data.params["cosine.width"] == "16"


def test_every_field_of_the_training_state_is_checkpointed_or_said_not_to_be():
    """Adding a field to TrainState without saying where a checkpoint keeps it fails here."""
    fields = {f.name for f in dataclasses.fields(TrainState)}
    placed = [name for names in TrainState.CHECKPOINTED.values() for name in names]
    assert sorted(placed) == sorted(fields), "TrainState.CHECKPOINTED must name every field once"
