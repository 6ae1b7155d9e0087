"""The dataset registry (data_pipeline/datasets.py): one entry per dataset owns its write and load halves; the
trainer's `data.*` values reach each dataset's own options by name; the registry imports without torch."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from data_pipeline import DataError, composer_for
from data_pipeline.__main__ import main as data_cli
from data_pipeline.datasets import (
    DATASETS,
    AffineOptions,
    dataset_names,
    dataset_spec,
    load_option_names,
)
from data_pipeline.shards import Manifest
from data_pipeline.sources.affine import AffineComposer
from data_pipeline.sources.augmented import AugmentationComposer
from data_pipeline.sources.glimpses import GlimpseComposer
from data_pipeline.sources.threedie import ThreeDIEComposer
from data_pipeline.transforms import ActionSpace
from tests.helpers.paths import PROJECT_ROOT
from trainer.config.schema import DataConfig

INFO = {"num_classes": 10, "class_names": [str(i) for i in range(10)], "channels": 1, "height": 28, "width": 28,
        "mean": 0.5, "std": 0.25}


def _manifest(dataset: str, **info) -> Manifest:
    return Manifest(1, dataset, "train", 0, [], {}, {**INFO, **info})


def test_the_registry_and_the_package_import_without_torch():
    code = ("import sys, data_pipeline, data_pipeline.datasets as d; names = d.dataset_names(); "
            "d.load_option_names(); assert 'torch' not in sys.modules, 'torch was imported'; "
            "from data_pipeline import DataError, dataset_names; assert dataset_names() == names; "
            "assert 'torch' not in sys.modules; from data_pipeline import SequenceLoader; "
            "assert 'torch' in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, check=True)


def test_the_package_face_keeps_its_names_and_says_which_it_lacks():
    import data_pipeline

    for name in data_pipeline.__all__:
        assert getattr(data_pipeline, name) is not None
    assert "SequenceLoader" in dir(data_pipeline)
    with pytest.raises(AttributeError, match="has no attribute 'ComposerOptions'"):
        data_pipeline.ComposerOptions  # noqa: B018 - replaced by the registry's per-dataset options


def test_every_dataset_has_its_options_named_after_the_trainers_data_keys_with_its_defaults():
    defaults = {f.name: f.default for f in dataclasses.fields(DataConfig)}
    assert dataset_names() == tuple(DATASETS) and dataset_names()[0] == DataConfig.dataset
    for name, spec in DATASETS.items():
        for field in dataclasses.fields(spec.options):
            assert field.name in defaults, f"{name}: {spec.options.__name__}.{field.name} is no data.* key"
            assert field.default == defaults[field.name], f"{name}: {field.name} defaults differ from data.*"
    assert set(load_option_names()) <= set(defaults)


def test_composer_for_builds_the_composer_of_the_dataset_the_manifest_names_from_the_values_it_declares():
    values = {f.name: f.default for f in dataclasses.fields(DataConfig)}  # what the trainer hands over, and more
    values.update(rotation_deg=30.0, announced_actions=["rotation", "scale"], image_size=36, blur=False,
                  legacy_action_norm=True, legacy_pil_rounding=True,
                  latent_type="rotcolor", canonical_quaternions=False, fovea_size=12,
                  use_saliency=False, inhibition_of_return=False, legacy_patch_transpose=True, crop_size=24)
    rgb = {"channels": 3, "height": 32, "width": 32}
    expected = {
        "fashion-mnist": AffineComposer(ActionSpace(rotation_deg=30.0), 36, 28, 28, 1, 10, ("rotation", "scale")),
        "mnist": AffineComposer(ActionSpace(rotation_deg=30.0), 36, 28, 28, 1, 10, ("rotation", "scale")),
        "cifar100": AugmentationComposer(blur=False, legacy_view_norm=True, pil_rounding=True, image_size=36,
                                         source_size=(32, 32), num_classes=10),
        "tinyimagenet": AugmentationComposer(blur=False, legacy_view_norm=True, pil_rounding=True, image_size=36,
                                             source_size=(32, 32), num_classes=10),
        "3diebench": ThreeDIEComposer(latent_type="rotcolor", canonical_quaternions=False),
        "stl10": GlimpseComposer(fovea_size=12, use_saliency=False, inhibition_of_return=False, legacy_transpose=True,
                                 crop=24),
        "imagenet": GlimpseComposer(fovea_size=12, use_saliency=False, inhibition_of_return=False,
                                    legacy_transpose=True, crop=24),
    }
    assert set(expected) == set(DATASETS)
    for name, composer in expected.items():
        info = INFO if name in ("fashion-mnist", "mnist") else rgb
        assert composer_for(_manifest(name, **info), values) == composer, name
    # The defaults, from no values, from an options object, and for a set of no registered dataset (image + label).
    assert composer_for(_manifest("custom")) == AffineComposer(ActionSpace(), 32, 28, 28, 1, 10)
    assert composer_for(_manifest("toy"), AffineOptions(image_size=40)).image_size == 40
    assert composer_for(_manifest("mnist"), dataset_spec("mnist").load_options(values)).announced == (
        "rotation", "scale")


def test_unknown_datasets_and_options_are_one_clear_error(tmp_path):
    with pytest.raises(DataError, match="unknown dataset 'svhn'; choose one of fashion-mnist, mnist, cifar100"):
        dataset_spec("svhn")
    from data_pipeline import write_dataset

    with pytest.raises(DataError, match=r"cifar100 takes no image_size option \(it takes: none\)"):
        write_dataset("cifar100", tmp_path, str(tmp_path / "out"), image_size=32)
    with pytest.raises(DataError, match="stl10 has no split 'ood'; its splits are train, unlabeled, val"):
        write_dataset("stl10", tmp_path, str(tmp_path / "out"), splits=("ood",))


def test_the_clis_datasets_and_write_flags_come_from_the_registry(capsys):
    with pytest.raises(SystemExit):
        data_cli(["write", "--help"])
    usage = capsys.readouterr().out
    for name in DATASETS:
        assert name in usage
    for option in {o for spec in DATASETS.values() for o in spec.write_options}:
        assert option.flag in usage
    assert "3diebench: stored view side (128); imagenet: stored shorter side (224)" in " ".join(usage.split())
    with pytest.raises(SystemExit):
        data_cli(["fetch", "mnist"])  # only a dataset whose source fetches its raw files
    assert "invalid choice: 'mnist' (choose from 'fashion-mnist')" in capsys.readouterr().err
