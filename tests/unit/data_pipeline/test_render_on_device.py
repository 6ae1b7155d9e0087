"""`data.render_on=device`: loaders ship the sources and every drawn parameter, the training process renders the
views; a seed gives the same batch bit for bit, whichever process renders it and with how many threads."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest
import torch

from data_pipeline import RENDER_INPUTS, render_planned
from data_pipeline.sources.affine import AffineComposer
from data_pipeline.sources.augmented import AugmentationComposer, ImageRecord
from data_pipeline.sources.base import encode_jpeg
from data_pipeline.sources.glimpses import GlimpseComposer
from data_pipeline.sources.threedie import ThreeDIEComposer, ThreeDIERecord
from data_pipeline.transforms import ActionSpace
from tests.helpers.runs import tiny_overrides
from trainer.config import load_config
from trainer.data import DeviceFeed, build_loader, normalisation, renders_on_device

CPU = torch.device("cpu")


def _affine():
    rng = np.random.default_rng(0)
    records = [(rng.integers(0, 256, (28, 28), dtype=np.uint8), i % 10) for i in range(6)]
    return AffineComposer(ActionSpace(rotation_deg=45), 32, 28, 28, 1, 10), records


def _augmentation(image_size):
    rng = np.random.default_rng(1)
    records = [ImageRecord(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), i) for i in range(6)]
    return AugmentationComposer(image_size=image_size), records


def _glimpses():
    rng = np.random.default_rng(2)
    records = [{"image": rng.integers(0, 256, (48, 48, 3), dtype=np.uint8),
                "saliency": rng.random((48, 48)).astype(np.float32), "label": i} for i in range(4)]
    return GlimpseComposer(fovea_size=12), records


def _threedie():
    rng = np.random.default_rng(3)
    records = [ThreeDIERecord(tuple(encode_jpeg(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8))
                                    for _ in range(6)), tuple(range(6)),
                              rng.standard_normal((6, 7)).astype(np.float32), i) for i in range(3)]
    return ThreeDIEComposer(), records


FAMILIES = {"affine": _affine, "augmentation": lambda: _augmentation(None),
            "augmentation, resized": lambda: _augmentation(40), "glimpses": _glimpses, "3diebench": _threedie}


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if torch.is_tensor(a[key]):
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


@pytest.mark.parametrize("family", FAMILIES)
def test_a_planned_batch_renders_elsewhere_to_the_batch_the_loader_composes(family):
    """The loader composes with one thread; the training process renders a plan that crossed a process boundary
    (pickled, as a DataLoader worker sends it) with the trainer's threads: the same batch, bit for bit."""
    composer, records = FAMILIES[family]()
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        composed = composer.compose(records, 4, torch.Generator().manual_seed(7))
        planned = pickle.loads(pickle.dumps(composer.plan(records, 4, torch.Generator().manual_seed(7))))
        torch.set_num_threads(2)
        rendered = render_planned(composer, planned, CPU)
    finally:
        torch.set_num_threads(previous)
    assert "views" not in planned and RENDER_INPUTS in planned
    _same(composed, rendered)


def test_a_loader_ships_the_source_once_instead_of_its_rendered_views():
    composer, records = _affine()
    planned = composer.plan(records, 4, torch.Generator().manual_seed(0))
    views = composer.compose(records, 4, torch.Generator().manual_seed(0))["views"]
    shipped = sum(t.numel() * t.element_size() for t in planned[RENDER_INPUTS].values())
    assert shipped < views.numel() * views.element_size() / 3  # 1 source of 28² instead of 4 views of 32²


def test_3diebench_ships_the_drawn_views_jpegs_and_refuses_a_truncated_one_in_the_loader():
    composer, records = _threedie()
    planned = composer.plan(records, 4, torch.Generator().manual_seed(0))
    jpegs = planned[RENDER_INPUTS]["jpegs"]
    assert len(jpegs) == 3 * 4 and all(isinstance(blob, bytes) for blob in jpegs)  # bytes, not decoded pixels
    broken = dataclasses.replace(records[0], views=tuple(view[:-20] for view in records[0].views))
    with pytest.raises(ValueError, match="is not a complete JPEG"):
        composer.plan([broken], 4, torch.Generator().manual_seed(0))


def test_render_on_auto_means_the_device_where_the_workers_have_gpus():
    assert not renders_on_device(load_config())
    assert renders_on_device(load_config(None, ["data.render_on=device"]))
    config = load_config(None, ["data.render_on=auto"])
    config.scaling.use_gpu = True  # (a GPU run's config; this machine may have none)
    assert renders_on_device(config)
    assert not renders_on_device(load_config(None, ["data.render_on=loader"]))


def test_the_trainers_device_batches_are_the_same_in_both_modes(fashion_mnist_shards, tmp_path):
    """Through the real loader (a worker process renders, or the training process does) and the DeviceFeed."""
    batches = {}
    for mode in ("loader", "device"):
        overrides = tiny_overrides(fashion_mnist_shards, tmp_path / "runs", "sqlite:///unused.db", mode)
        config = load_config(None, overrides + [f"data.render_on={mode}", "data.loader_workers=1",
                                                "scaling.num_workers=1", "data.batch_size=16"])
        loader = build_loader(config, "train", 0, 1)
        loader.set_epoch(0)
        feed = DeviceFeed(CPU, *normalisation(loader, CPU), loader.composer)
        batches[mode] = [batch for batch, _ in zip(feed(loader), range(3))]
    for loader_batch, device_batch in zip(*batches.values()):
        _same(loader_batch, device_batch)


@pytest.mark.gpu
@pytest.mark.parametrize("family", FAMILIES)
def test_a_gpu_renders_a_plan_like_the_cpu(family):
    """Same inputs, the same ops on another device: views within one grey level (float rounding of the
    resampling), everything else equal. 3DIEBench's JPEGs are decoded by nvJPEG there where torchvision is
    installed, by libjpeg (Pillow) here: two IDCTs, so a looser bound (to be tightened with a GPU's figures)."""
    composer, records = FAMILIES[family]()
    planned = composer.plan(records, 4, torch.Generator().manual_seed(7))
    cpu = render_planned(composer, planned, CPU)
    gpu = render_planned(composer, planned, torch.device("cuda"))
    for key, value in cpu.items():
        if key in ("views", "orig"):
            diff = (value.int() - gpu[key].cpu().int()).abs()
            bound = (16, 1.0) if family == "3diebench" else (1, 1.0)
            assert gpu[key].is_cuda and diff.max() <= bound[0] and diff.float().mean() <= bound[1], key
        elif torch.is_tensor(value):
            assert torch.equal(value, gpu[key].cpu()), key
