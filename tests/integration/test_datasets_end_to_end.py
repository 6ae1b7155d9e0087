"""Every paper dataset, from its raw on-disk format to a model step: `python -m data_pipeline write`,
then the trainer's own loader and composer, then seq-JEPA's forward and backward on the batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data_pipeline.__main__ import main as data_cli
from tests.helpers.raw_datasets import (
    SYNSETS,
    cifar_rows,
    dump,
    write_imagenet,
    write_object,
    write_stl10,
    write_tinyimagenet,
)
from trainer.config import load_config
from trainer.data import build_loader, normalisation, to_device
from trainer.launch import ensure_dataset
from trainer.methods.build import build_model
from trainer.training.probes import OnlineProbes, probe_features, probe_loss


def _cifar100(root):
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    dump({"fine_label_names": [f"class{i:03d}" for i in range(100)]}, folder / "meta", py2=False)
    for name, n in (("train", 24), ("test", 12)):
        images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        dump({"data": cifar_rows(images), "fine_labels": list(rng.integers(0, 100, n))}, folder / name, py2=False)
    return folder, []


def _3diebench(root, objects: int = 6):
    """Objects alternate between two synsets; two thirds go to train, the rest to val."""
    rng = np.random.default_rng(0)
    paths = [f"/{SYNSETS[i % 2]}/obj{i:02d}abcdef/" for i in range(objects)]
    for i, path in enumerate(paths):
        write_object(root / path.strip("/"), i, range(6), rng)
    cut = 2 * objects // 3
    for split, members in (("train", range(cut)), ("val", range(cut, objects))):
        np.save(root / f"{split}_images.npy", np.array([paths[i] for i in members]))
        np.save(root / f"{split}_labels.npy", np.array([i % 2 for i in members], np.int64))
    return root, ["--image-size", "16"]


def _stl10(root):
    write_stl10(root)
    return root, []


def _imagenet(root):
    write_imagenet(root, sizes=((40, 60), (50, 30), (48, 48)))
    return root, ["--image-size", "32"]


RAW = {"cifar100": _cifar100, "tinyimagenet": lambda root: (write_tinyimagenet(root), []), "3diebench": _3diebench,
       "stl10": _stl10, "imagenet": _imagenet}
MODEL = ["model.encoder=convnet", "model.conv_width=4", "model.seq_len=2", "seq_jepa.num_layers=1",
         "model.action_proj_dim=8", "seq_jepa.pred_hidden=16", "data.loader_workers=0", "scaling.num_workers=1",
         "data.shuffle_buffer=4", "data.batch_size=2", "data.val_batch_size=2"]


@pytest.mark.parametrize("dataset", sorted(RAW))
def test_raw_files_to_shards_to_a_training_step(dataset, tmp_path):
    raw, options = RAW[dataset](tmp_path / "raw")
    out = tmp_path / "shards"
    assert data_cli(["write", dataset, "--source-dir", str(raw), "--out", str(out), "--samples-per-shard", "2",
                     "--splits", "train", "val", *options]) == 0
    config = load_config(None, MODEL + [f"data.dataset={dataset}", f"data.shards={out}", "data.prepare=false",
                                        "data.fovea_size=16"])
    ensure_dataset(config)
    loader = build_loader(config, "train", 0, 1)
    batch = next(iter(loader))
    assert batch["views"].dtype == torch.uint8 and batch["views"].shape[:3] == (2, 3, loader.channels)
    assert batch["rel_actions"].shape == (2, 2, loader.action_dim)

    model = build_model(config, loader.action_dim, loader.channels)
    views = to_device(batch, torch.device("cpu"), *normalisation(loader, torch.device("cpu")))["views"]
    out = model(views, batch["rel_actions"])
    out.loss.backward()
    assert torch.isfinite(out.loss) and model.encoder.blocks[0][0].weight.grad is not None


def test_stl10_trains_on_its_unlabeled_split_and_the_probes_skip_its_missing_labels(tmp_path):
    raw, _ = _stl10(tmp_path / "raw")
    out = tmp_path / "shards"
    assert data_cli(["write", "stl10", "--source-dir", str(raw), "--out", str(out), "--samples-per-shard", "2"]) == 0
    config = load_config(None, MODEL + ["data.dataset=stl10", f"data.shards={out}", "data.prepare=false",
                                        "data.fovea_size=16", "data.train_split=unlabeled"])
    ensure_dataset(config)
    loader = build_loader(config, "train", 0, 1)
    batch = next(iter(loader))
    assert (batch["label"] == -1).all()  # the unlabeled split
    model = build_model(config, loader.action_dim, loader.channels)
    views = to_device(batch, torch.device("cpu"), *normalisation(loader, torch.device("cpu")))["views"]
    out = model(views, batch["rel_actions"])
    probes = OnlineProbes(model.encoder.out_dim, model.token_dim, loader.action_dim, loader.num_classes, 8)
    loss = out.loss + probe_loss(probes(probe_features(out)), batch["label"], batch["rel_actions"][:, 0])
    assert torch.isfinite(loss)


def test_shards_of_another_dataset_are_refused_before_training(tmp_path):
    raw, _ = _cifar100(tmp_path / "raw")
    assert data_cli(["write", "cifar100", "--source-dir", str(raw), "--out", str(tmp_path / "s")]) == 0
    config = load_config(None, MODEL + ["data.dataset=3diebench", f"data.shards={tmp_path / 's'}",
                                        "data.prepare=false"])
    with pytest.raises(Exception, match="data.dataset=3diebench but the shards .* hold cifar100"):
        ensure_dataset(config)


@pytest.mark.integration
def test_two_fsdp2_workers_train_on_3diebench_shards(ray_local, tmp_path, mlflow_uri):
    """RGB views, per-channel normalisation and quaternion actions through the whole Ray Train job."""
    from tests.helpers.runs import PROBE_METRICS, the_run, tiny_overrides
    from trainer.run import main

    raw, options = _3diebench(tmp_path / "raw", objects=18)
    out = tmp_path / "shards"
    assert data_cli(["write", "3diebench", "--source-dir", str(raw), "--out", str(out), "--samples-per-shard", "2",
                     *options]) == 0
    overrides = tiny_overrides(out, tmp_path / "runs", mlflow_uri, "3diebench-run")
    assert main(overrides + ["data.dataset=3diebench", "data.latent_type=rotcolor", "data.batch_size=4",
                             "data.val_batch_size=4", "scaling.num_workers=2", "train.epochs=1",
                             "train.steps_per_epoch=2"]) == 0
    _, run = the_run(mlflow_uri, "3diebench-run")
    for key in PROBE_METRICS + ["val/equi/r2_enc/color"]:
        assert key in run.data.metrics, f"{key} missing from MLflow"
