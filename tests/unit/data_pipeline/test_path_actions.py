"""`path_actions`, the path-integration target (docs/paper-and-original-code.md#path-integration): the net action from
the first view to view j+1, composed per dataset the way one relative step is computed, from every composer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from data_pipeline.sources.affine import AffineComposer
from data_pipeline.sources.augmented import AugmentationComposer, ImageRecord
from data_pipeline.sources.base import encode_jpeg
from data_pipeline.sources.glimpses import GlimpseComposer
from data_pipeline.sources.threedie import ThreeDIEComposer, ThreeDIERecord, path_latent_actions
from data_pipeline.transforms import ActionSpace
from tests.helpers.rotation_reference import quaternion_to_matrix

B, V = 6, 5


def _images(shape: tuple[int, ...], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(B)]


def _affine():
    composer = AffineComposer(ActionSpace(rotation_deg=90.0), 32, height=28, width=28, channels=1, num_classes=10)
    return composer, [(image, i % 10) for i, image in enumerate(_images((28, 28)))]


def _augmented():
    return AugmentationComposer(), [ImageRecord(image, 0) for image in _images((32, 32, 3))]


def _threedie():
    rng = np.random.default_rng(1)
    records = []
    for _ in range(B):
        latents = np.concatenate([rng.uniform(-np.pi / 2, np.pi / 2, (8, 3)), rng.uniform(0, 1, (8, 4))], axis=1)
        views = tuple(encode_jpeg(image) for image in _images((16, 16, 3))[:8])
        records.append(ThreeDIERecord(views=views, view_ids=tuple(range(8)), latents=latents.astype(np.float32),
                                      label=0))
    return ThreeDIEComposer(latent_type="all"), records


def _glimpses():
    records = [{"image": image, "saliency": None, "label": 1} for image in _images((64, 64, 3))]
    return GlimpseComposer(fovea_size=16, use_saliency=False), records


@pytest.mark.parametrize("make", [_affine, _augmented, _threedie, _glimpses])
def test_every_composer_emits_path_actions_whose_first_step_is_the_relative_action(make):
    composer, records = make()
    batch = composer.compose(records, V, torch.Generator().manual_seed(0))
    path, rel = batch["path_actions"], batch["rel_actions"]
    assert path.shape == rel.shape == (B, V - 1, composer.action_dim) and path.dtype == torch.float32
    torch.testing.assert_close(path[:, 0], rel[:, 0], atol=0, rtol=0)
    assert not torch.allclose(path[:, -1], rel[:, -1])  # later entries are net actions, not steps


def test_affine_net_rotation_is_the_sum_of_the_step_rotations_and_shifts_add_up():
    composer, records = _affine()
    batch = composer.compose(records, V, torch.Generator().manual_seed(2))
    rel, path = batch["rel_actions"].double(), batch["path_actions"].double()
    step_angles = torch.atan2(rel[..., 1], rel[..., 0]).cumsum(dim=1)
    net_angle = torch.atan2(path[..., 1], path[..., 0])
    wrapped = torch.remainder(net_angle - step_angles + math.pi, 2 * math.pi) - math.pi
    torch.testing.assert_close(wrapped, torch.zeros_like(wrapped), atol=1e-5, rtol=0)
    torch.testing.assert_close(path[..., 2:], rel[..., 2:].cumsum(dim=1), atol=1e-5, rtol=0)  # scale, shift, photo


def test_3diebench_path_rotation_is_the_product_of_the_step_rotations():
    composer, records = _threedie()
    batch = composer.compose(records, V, torch.Generator().manual_seed(3))
    steps = quaternion_to_matrix(batch["rel_actions"][..., :4].double())
    path = quaternion_to_matrix(batch["path_actions"][..., :4].double())
    product = steps[:, 0]
    for j in range(1, V - 1):
        product = product @ steps[:, j]
        torch.testing.assert_close(path[:, j], product, atol=1e-5, rtol=0)
    absolute = quaternion_to_matrix(batch["actions"][..., :4].double())
    torch.testing.assert_close(absolute[:, :1] @ path, absolute[:, 1:], atol=1e-5, rtol=0)  # R_0 R_path = R_{j+1}
    torch.testing.assert_close(batch["path_actions"][..., 4:], batch["rel_actions"][..., 4:].cumsum(dim=1),
                               atol=1e-5, rtol=0)  # colours and spot: differences add up


def test_3diebench_canonical_path_quaternions_have_nonnegative_w_and_the_same_rotations():
    latents = torch.rand(50, V, 7, dtype=torch.float64) * 4 - 2  # out of distribution too
    fixed, raw = path_latent_actions(latents, "rot", True), path_latent_actions(latents, "rot", False)
    assert (fixed[..., 3] >= 0).all() and (raw[..., 3] < 0).any()
    torch.testing.assert_close(quaternion_to_matrix(fixed), quaternion_to_matrix(raw))


def test_glimpse_path_is_the_net_saccade_displacement():
    composer, records = _glimpses()
    batch = composer.compose(records, V, torch.Generator().manual_seed(4))
    torch.testing.assert_close(batch["path_actions"], batch["rel_actions"].cumsum(dim=1), atol=1e-6, rtol=0)
    torch.testing.assert_close(batch["path_actions"], batch["actions"][:, 1:] - batch["actions"][:, :1])
