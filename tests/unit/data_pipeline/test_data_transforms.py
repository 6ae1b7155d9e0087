"""Batched view rendering and actions: conventions, exactness, determinism."""

import math

import pytest
import torch

from data_pipeline import ACTION_DIM, ACTION_GROUPS, ActionSpace, DataError
from data_pipeline.transforms import absolute_actions, pad_to_canvas, relative_actions, render_views, sample_params

IDENTITY = ActionSpace(rotation_deg=0, scale_min=1, scale_max=1, translate=0, brightness=0, contrast=0)


def _params(batch=1, views=1, **values):
    """Raw params (B, V, 6), identity except the named ones."""
    names = ["theta", "log_scale", "tx", "ty", "brightness", "log_contrast"]
    p = torch.zeros(batch, views, 6)
    for name, value in values.items():
        p[..., names.index(name)] = value
    return p


def _images(batch=2, channels=1, size=28, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, channels, size, size), generator=g, dtype=torch.uint8)


def test_canvas_is_four_pixels_larger_and_centred():
    img = torch.full((1, 1, 28, 28), 7, dtype=torch.uint8)
    canvas = pad_to_canvas(img)
    assert canvas.shape == (1, 1, 32, 32)
    assert canvas[..., 2:30, 2:30].eq(7).all() and canvas.sum() == 7 * 28 * 28


def test_identity_params_reproduce_padded_image():
    for channels in (1, 3):
        img = _images(batch=3, channels=channels)
        views = render_views(img, _params(3, 4), out_size=32)
        assert views.shape == (3, 4, channels, 32, 32) and views.dtype == torch.uint8
        assert torch.equal(views, pad_to_canvas(img).unsqueeze(1).expand_as(views))


def test_rotation_by_90_degrees_matches_rot90():
    img = _images()
    views = render_views(img, _params(2, 1, theta=math.pi / 2), out_size=32)[:, 0]
    expected = torch.rot90(pad_to_canvas(img), 1, dims=(-2, -1))  # counter-clockwise as displayed
    assert (views.int() - expected.int()).abs().max() <= 1


def test_translation_moves_content_right_and_down():
    img = torch.zeros(1, 1, 28, 28, dtype=torch.uint8)
    img[0, 0, 14, 14] = 255  # canvas pixel (16, 16)
    view = render_views(img, _params(tx=4 / 32, ty=2 / 32), out_size=32)[0, 0, 0]
    assert view[18, 20] == 255 and view.sum() == 255  # 4 px right, 2 px down


def test_scale_above_one_enlarges_content():
    img = torch.zeros(1, 1, 28, 28, dtype=torch.uint8)
    img[..., 10:18, 10:18] = 255
    small = render_views(img, _params(), 32).float().sum()
    big = render_views(img, _params(log_scale=math.log(2.0)), 32).float().sum()
    assert big / small == pytest.approx(4.0, rel=0.1)


def test_brightness_and_contrast_on_unit_intensities():
    img = torch.tensor([0, 64, 128, 255], dtype=torch.uint8).repeat(7).view(1, 1, 28, 1).expand(1, 1, 28, 28)
    img = img.contiguous()
    x = pad_to_canvas(img).float() / 255
    b, c = 0.1, 1.5
    view = render_views(img, _params(brightness=b, log_contrast=math.log(c)), 32)[:, 0]
    expected = ((x - 0.5) * c + 0.5 + b).clamp(0, 1).mul(255).round()
    assert torch.equal(view.float(), expected)


def test_resize_to_other_output_size():
    views = render_views(_images(), _params(2, 3), out_size=64)
    assert views.shape == (2, 3, 1, 64, 64)


def test_sample_params_is_deterministic_and_in_range():
    space = ActionSpace()
    a = sample_params(64, 5, space, torch.Generator().manual_seed(3))
    b = sample_params(64, 5, space, torch.Generator().manual_seed(3))
    c = sample_params(64, 5, space, torch.Generator().manual_seed(4))
    assert a.shape == (64, 5, 6) and torch.equal(a, b) and not torch.equal(a, c)
    assert a[..., 0].abs().max() <= math.radians(90) + 1e-6
    assert math.log(0.75) - 1e-6 <= a[..., 1].min() and a[..., 1].max() <= math.log(1.25) + 1e-6
    assert a[..., 2:4].abs().max() <= 0.15 + 1e-6 and a[..., 4].abs().max() <= 0.3 + 1e-6
    assert math.log(0.7) - 1e-6 <= a[..., 5].min() and a[..., 5].max() <= math.log(1.3) + 1e-6


def test_absolute_actions_layout():
    p = torch.tensor([[[0.3, 0.1, 0.05, -0.02, 0.2, -0.1]]])
    a = absolute_actions(p)
    assert a.shape == (1, 1, ACTION_DIM)
    expected = torch.tensor([math.cos(0.3), math.sin(0.3), 0.1, 0.05, -0.02, 0.2, -0.1])
    assert torch.allclose(a[0, 0], expected)


def test_relative_action_of_consecutive_views():
    p = sample_params(4, 3, ActionSpace(), torch.Generator().manual_seed(0))
    rel = relative_actions(p)
    assert rel.shape == (4, 2, ACTION_DIM)
    j, k = p[:, 1], p[:, 2]  # rel[:, 1] is view 1 -> view 2
    angle = k[:, 0] - j[:, 0]
    expected = torch.cat([torch.stack([angle.cos(), angle.sin()], -1), k[:, 1:] - j[:, 1:]], -1)
    assert torch.allclose(rel[:, 1], expected, atol=1e-6)


def test_disabled_transformations_give_constant_zero_dims():
    space = ActionSpace(rotation_deg=0, brightness=0)
    p = sample_params(16, 3, space, torch.Generator().manual_seed(0))
    for actions in (absolute_actions(p, space), relative_actions(p, space)):
        dims = ACTION_GROUPS["rotation"] + ACTION_GROUPS["brightness"]
        assert actions[..., dims].eq(0).all()
        assert actions[..., ACTION_GROUPS["scale"]].std() > 0
    identity = absolute_actions(sample_params(4, 2, IDENTITY), IDENTITY)
    assert identity.eq(0).all()


def test_invalid_action_space_is_clear_error():
    with pytest.raises(DataError, match="contrast must be in"):
        ActionSpace(contrast=1.0)
    with pytest.raises(DataError, match="scale_min <= scale_max"):
        ActionSpace(scale_min=1.5, scale_max=1.0)


def test_render_rejects_float_images():
    with pytest.raises(DataError, match="uint8"):
        render_views(torch.zeros(1, 1, 8, 8), _params(), 12)


def test_broadcast_affine_grid_equals_torch_affine_grid():
    from data_pipeline.transforms import _sampling_matrices, affine_grid

    theta = _sampling_matrices(sample_params(8, 2, ActionSpace(), torch.Generator().manual_seed(0)).view(16, 6))
    for size in (12, 32):
        expected = torch.nn.functional.affine_grid(theta, [16, 1, size, size], align_corners=False)
        assert torch.allclose(affine_grid(theta, size), expected, atol=1e-6)
