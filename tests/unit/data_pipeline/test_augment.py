"""The paper's augmentations: sampling follows torchvision, rendering matches PIL, actions tell the truth."""

from __future__ import annotations

import colorsys
import math
import random

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance

from data_pipeline import augment_ops as ops
from data_pipeline.augment import (
    ObservationPipeline,
    TargetPipeline,
    ViewParams,
    action_groups,
    apply_view_params,
    blur_kernel_size,
    compose_batch,
    raw_actions,
    sample_crop_boxes,
    sample_view_params,
)
from data_pipeline.errors import DataError

PLAIN = ObservationPipeline(flip_p=0.0, jitter_p=0.0, grayscale_p=0.0, blur_p=0.0)  # crop only


def random_images(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def smooth_images(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """Natural-ish images (smooth colour fields) so that rounding differences stay small."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = [np.stack([np.sin(2 * math.pi * (a * xx + b * yy) + c) for a, b, c in rng.uniform(0, 2, (3, 3))], -1)
           for _ in range(n)]
    return np.clip(np.stack(out) * 110 + 128, 0, 255).astype(np.uint8)


def nchw_float(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255


def hwc_uint8(images: torch.Tensor) -> np.ndarray:
    return ops.to_uint8(images).permute(0, 2, 3, 1).numpy()


def params_for(boxes, flip=None, n=None, **overrides) -> ViewParams:
    """Hand-made view parameters: the given boxes, everything else identity unless overridden."""
    boxes = torch.as_tensor(boxes, dtype=torch.int64).view(-1, 4)
    n = len(boxes)
    fields = dict(boxes=boxes, flip=torch.zeros(n, dtype=torch.bool) if flip is None else torch.as_tensor(flip),
                  jitter=torch.tensor([[1.0, 1.0, 1.0, 0.0]] * n, dtype=torch.float64),
                  jitter_order=torch.arange(4).repeat(n, 1), jittered=torch.zeros(n, dtype=torch.bool),
                  gray=torch.zeros(n, dtype=torch.bool), sigma=torch.zeros(n, dtype=torch.float64),
                  solarize=torch.zeros(n, dtype=torch.bool))
    return ViewParams(**{**fields, **overrides})


def assert_close_uint8(ours: np.ndarray, reference: np.ndarray, tolerance: int = 2) -> None:
    diff = np.abs(ours.astype(int) - reference.astype(int))
    assert diff.max() <= tolerance, f"max difference {diff.max()} grey levels"


# ---------------------------------------------------------------- crop, resize, flip

def test_crop_at_its_own_size_copies_the_box_exactly():
    ramp = np.zeros((1, 32, 32, 3), np.uint8)
    ramp[0, :, :, 0] = np.arange(32)[:, None] * 8  # red encodes the row
    ramp[0, :, :, 1] = np.arange(32)[None, :] * 8  # green encodes the column
    top, left, size = 5, 9, 16
    view = apply_view_params(torch.from_numpy(ramp).permute(0, 3, 1, 2), params_for([top, left, size, size]),
                             size, PLAIN)
    assert np.array_equal(view[0].permute(1, 2, 0).numpy(), ramp[0, top:top + size, left:left + size])


def test_resized_crop_matches_pil_bicubic():
    images = random_images(6)
    boxes = torch.tensor([[0, 0, 32, 32], [3, 4, 20, 25], [10, 0, 22, 17], [0, 7, 9, 9], [31, 31, 1, 1],
                          [2, 2, 28, 30]])
    ours = hwc_uint8(ops.resized_crop(nchw_float(images), boxes, 48))
    for image, (i, j, h, w), view in zip(images, boxes.tolist(), ours):
        reference = Image.fromarray(image).crop((j, i, j + w, i + h)).resize((48, 48), Image.BICUBIC)
        assert_close_uint8(view, np.asarray(reference))


def test_downscaling_matches_pil_antialiased_bicubic():
    images = random_images(2, size=64)
    ours = hwc_uint8(ops.resized_crop(nchw_float(images), torch.tensor([[0, 0, 64, 64], [8, 4, 50, 60]]), 20))
    for image, (i, j, h, w), view in zip(images, [(0, 0, 64, 64), (8, 4, 50, 60)], ours):
        reference = Image.fromarray(image).crop((j, i, j + w, i + h)).resize((20, 20), Image.BICUBIC)
        assert_close_uint8(view, np.asarray(reference))


def test_flip_mirrors_the_columns():
    image = torch.from_numpy(random_images(1)).permute(0, 3, 1, 2).repeat(2, 1, 1, 1)
    views = apply_view_params(image, params_for([[2, 3, 20, 24]] * 2, flip=[False, True]), 32, PLAIN)
    assert torch.equal(views[1], views[0].flip(-1))


# ---------------------------------------------------------------- colour jitter, grayscale

@pytest.mark.parametrize("factor", [0.6, 1.0, 1.4])
def test_brightness_factor_scales_intensities(factor):
    x = nchw_float(smooth_images(2))
    assert torch.allclose(ops.adjust_brightness(x, torch.full((2,), factor)), (x * factor).clamp(0, 1))


@pytest.mark.parametrize("op, enhancer, factor", [
    (ops.adjust_brightness, ImageEnhance.Brightness, 0.7), (ops.adjust_brightness, ImageEnhance.Brightness, 1.35),
    (ops.adjust_contrast, ImageEnhance.Contrast, 0.65), (ops.adjust_contrast, ImageEnhance.Contrast, 1.3),
    (ops.adjust_saturation, ImageEnhance.Color, 0.8), (ops.adjust_saturation, ImageEnhance.Color, 1.2),
])
def test_jitter_factors_match_pil_image_enhance(op, enhancer, factor):
    images = random_images(3)
    ours = hwc_uint8(op(nchw_float(images), torch.full((3,), factor)))
    for image, view in zip(images, ours):
        assert_close_uint8(view, np.asarray(enhancer(Image.fromarray(image)).enhance(factor)))


def test_hue_shift_of_zero_is_identity():
    images = random_images(2)
    assert np.array_equal(hwc_uint8(ops.adjust_hue(nchw_float(images), torch.zeros(2))), images)


def test_hue_shift_matches_colorsys():
    image = random_images(1, size=8)
    ours = hwc_uint8(ops.adjust_hue(nchw_float(image), torch.tensor([0.07])))[0]
    for (y, x), _ in np.ndenumerate(image[0, :, :, 0]):
        h, s, v = colorsys.rgb_to_hsv(*(image[0, y, x] / 255))
        expected = np.round(np.array(colorsys.hsv_to_rgb((h + 0.07) % 1.0, s, v)) * 255)
        assert_close_uint8(ours[y, x], expected, tolerance=1)


def test_jitter_ops_run_in_each_samples_own_order():
    x = nchw_float(smooth_images(2))
    factors = torch.tensor([[1.3, 0.6, 1.2, 0.08]] * 2)
    order = torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0]])
    out = ops.color_jitter(x, factors, order, torch.tensor([True, True]))
    forward, backward = x[:1], x[1:]
    for k in range(4):
        forward = ops.JITTER_OPS[k](forward, factors[:1, k])
        backward = ops.JITTER_OPS[3 - k](backward, factors[1:, 3 - k])
    assert torch.allclose(out, torch.cat([forward, backward]), atol=1e-6)
    assert not torch.allclose(out[0], out[1], atol=1e-2)  # the order matters


def test_jitter_not_applied_leaves_the_image_untouched():
    x = nchw_float(random_images(1))
    out = ops.color_jitter(x, torch.tensor([[1.3, 0.6, 1.2, 0.08]]), torch.arange(4).view(1, 4), torch.tensor([False]))
    assert torch.equal(out, x)


def test_grayscale_has_equal_channels_with_itu_601_luma():
    x = nchw_float(random_images(2))
    out = ops.grayscale_where(x, torch.tensor([True, False]))
    assert torch.equal(out[0, 0], out[0, 1]) and torch.equal(out[0, 1], out[0, 2])
    assert torch.allclose(out[0, 0], 0.2989 * x[0, 0] + 0.587 * x[0, 1] + 0.114 * x[0, 2])
    assert torch.equal(out[1], x[1])


# ---------------------------------------------------------------- blur, solarize

def reference_blur(image: np.ndarray, sigma: float, k: int) -> np.ndarray:
    """torchvision's gaussian_blur: sampled Gaussian, reflect padding, separable."""
    x = np.linspace(-(k - 1) / 2, (k - 1) / 2, k)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(image.astype(float), ((k // 2, k // 2), (k // 2, k // 2), (0, 0)), mode="reflect")
    rows = sum(kernel[t] * padded[t:t + image.shape[0]] for t in range(k))
    return sum(kernel[t] * rows[:, t:t + image.shape[1]] for t in range(k))


def test_blur_with_sigma_zero_is_identity():
    x = nchw_float(random_images(2))
    assert torch.equal(ops.gaussian_blur(x, torch.zeros(2), 7), x)


def test_blur_matches_torchvision_reference_per_sample_sigma():
    images = random_images(3)
    sigmas = [0.3, 1.0, 2.0]
    ours = hwc_uint8(ops.gaussian_blur(nchw_float(images), torch.tensor(sigmas), 5))
    for image, sigma, view in zip(images, sigmas, ours):
        assert_close_uint8(view, np.round(reference_blur(image, sigma, 5)), tolerance=1)


def test_larger_sigma_lowers_variance():
    x = nchw_float(random_images(1)).repeat(4, 1, 1, 1)
    variances = ops.gaussian_blur(x, torch.tensor([0.0, 0.5, 1.0, 2.0]), 7).var(dim=(1, 2, 3))
    assert (variances[1:] < variances[:-1]).all()


def test_blur_kernel_sizes_follow_the_original_rule():
    assert blur_kernel_size(32) == 3 and blur_kernel_size(64) == 7


def test_solarize_inverts_pixels_at_or_above_128():
    x = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16).expand(2, 3, 16, 16)
    out = ops.solarize_where(x, torch.tensor([True, False]))
    expected = torch.where(x[0] >= 128, 255 - x[0], x[0])
    assert torch.equal(out[0], expected) and torch.equal(out[1], x[1])


# ---------------------------------------------------------------- parameter sampling

def torchvision_crop_box(rng: random.Random, height: int, width: int) -> tuple[int, int, int, int]:
    """`RandomResizedCrop.get_params` as torchvision writes it, with Python's RNG."""
    for _ in range(10):
        area = height * width * rng.uniform(0.2, 1.0)
        aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        w, h = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    return 0, 0, height, width


def test_crop_boxes_fit_and_match_torchvision_in_distribution():
    n = 20000
    ours = sample_crop_boxes(n, 32, 32, (0.2, 1.0), (3 / 4, 4 / 3), torch.Generator().manual_seed(0)).double()
    rng = random.Random(0)
    reference = torch.tensor([torchvision_crop_box(rng, 32, 32) for _ in range(n)], dtype=torch.float64)
    i, j, h, w = ours.unbind(1)
    assert (h >= 1).all() and (w >= 1).all() and (i + h <= 32).all() and (j + w <= 32).all()
    assert ((h * w) / 1024 >= 0.2 - 0.04).all()  # scale bound, up to the rounding of h and w
    assert ((w / h) >= 3 / 4 - 0.1).all() and ((w / h) <= 4 / 3 + 0.1).all()
    standard_error = reference.std(0) / math.sqrt(n)
    assert ((ours.mean(0) - reference.mean(0)).abs() < 4 * standard_error * math.sqrt(2)).all()
    assert torch.allclose(ours.std(0), reference.std(0), rtol=0.05)


def test_crop_falls_back_to_the_central_box_when_no_attempt_fits():
    boxes = sample_crop_boxes(5, 10, 40, (0.9, 1.0), (1.0, 1.0), torch.Generator().manual_seed(0))
    assert (boxes == torch.tensor([0, 15, 10, 10])).all()  # aspect 4 > 1: full height, central width


def test_target_and_observation_pipelines_differ_in_blur_and_solarize():
    g = torch.Generator().manual_seed(0)
    obs = sample_view_params(4000, ObservationPipeline(), 32, 32, g)
    tgt = sample_view_params(4000, TargetPipeline(), 32, 32, g)
    assert (obs.sigma >= 0.1).all() and not obs.solarize.any()
    assert abs((tgt.sigma > 0).double().mean() - 0.1) < 0.02 and abs(tgt.solarize.double().mean() - 0.2) < 0.03
    assert abs(obs.jittered.double().mean() - 0.8) < 0.03 and abs(obs.gray.double().mean() - 0.2) < 0.03


def test_unapplied_jitter_and_blur_record_identity_values():
    params = sample_view_params(2000, ObservationPipeline(blur_p=0.5), 32, 32, torch.Generator().manual_seed(1))
    raw = raw_actions(params)
    assert (raw[~params.jittered, 4:8] == torch.tensor([1.0, 1.0, 1.0, 0.0])).all()
    assert (raw[params.sigma == 0, 8] == 0).all() and (params.sigma == 0).any()
    jittered = raw[params.jittered]
    assert (jittered[:, 4:6] >= 0.6).all() and (jittered[:, 4:6] <= 1.4).all() and (jittered[:, 7].abs() <= 0.1).all()


def test_pipelines_reject_bad_values():
    with pytest.raises(DataError, match="jitter_p"):
        ObservationPipeline(jitter_p=1.5)
    with pytest.raises(DataError, match="blur_kernel"):
        TargetPipeline(blur_kernel=4)


# ---------------------------------------------------------------- compose_batch: the batch contract

def test_batch_contract_shapes_and_dtypes():
    batch = compose_batch(random_images(5), list(range(5)), num_views=4, generator=torch.Generator().manual_seed(0))
    assert batch["views"].shape == (5, 4, 3, 32, 32) and batch["views"].dtype == torch.uint8
    assert batch["actions"].shape == (5, 4, 9) and batch["actions"].dtype == torch.float32
    assert batch["rel_actions"].shape == (5, 3, 9) and batch["rel_actions"].dtype == torch.float32
    assert batch["label"].tolist() == [0, 1, 2, 3, 4] and batch["label"].dtype == torch.int64
    assert batch["orig"].shape == (5, 3, 32, 32) and batch["orig"].dtype == torch.uint8


def test_orig_is_the_unaugmented_image():
    images = random_images(2)
    batch = compose_batch(images, [0, 1], num_views=2, generator=torch.Generator().manual_seed(0))
    assert np.array_equal(batch["orig"].permute(0, 2, 3, 1).numpy(), images)


def test_records_are_accepted_and_out_size_resizes():
    records = [{"key": f"k{i}", "image": image, "label": 7 + i} for i, image in enumerate(random_images(3, 64))]
    batch = compose_batch(records, num_views=3, generator=torch.Generator().manual_seed(0), out_size=32)
    assert batch["views"].shape == (3, 3, 3, 32, 32) and batch["label"].tolist() == [7, 8, 9]


def test_no_blur_drops_the_sigma_coordinate():
    batch = compose_batch(random_images(2), [0, 1], num_views=3, generator=torch.Generator().manual_seed(0), blur=False)
    assert batch["actions"].shape == (2, 3, 8) and action_groups(blur=False) == {"crop": [0, 1, 2, 3],
                                                                                  "jitter": [4, 5, 6, 7]}


def test_same_seed_same_batch_other_seed_other_batch():
    images = random_images(4)

    def batch(seed):
        return compose_batch(images, [0] * 4, num_views=3, generator=torch.Generator().manual_seed(seed))

    first, again, other = batch(3), batch(3), batch(4)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["views"], other["views"])


def test_float_input_renders_like_uint8_input():
    images = torch.from_numpy(random_images(3)).permute(0, 3, 1, 2)
    params = sample_view_params(3, ObservationPipeline(), 32, 32, torch.Generator().manual_seed(0))
    as_uint8 = apply_view_params(images, params, 32, ObservationPipeline())
    as_float = apply_view_params(images.float() / 255, params, 32, ObservationPipeline())
    assert as_uint8.dtype == as_float.dtype == torch.uint8
    assert (as_uint8.int() - as_float.int()).abs().max() <= 1


def test_views_show_the_crop_their_actions_describe():
    images = smooth_images(4)
    plain = ObservationPipeline(jitter_p=0.0, grayscale_p=0.0, blur_p=0.0)
    batch = compose_batch(images, [0] * 4, num_views=3, generator=torch.Generator().manual_seed(0),
                          observation=plain, target=TargetPipeline(jitter_p=0.0, grayscale_p=0.0, blur_p=0.0,
                                                                   solarize_p=0.0))
    boxes = torch.round(batch["actions"][..., :4] * 32).long()  # fixed normalisation: fractions of the side
    for b, v in np.ndindex(4, 3):
        i, j, h, w = boxes[b, v].tolist()
        expected = np.asarray(Image.fromarray(images[b]).crop((j, i, j + w, i + h)).resize((32, 32), Image.BICUBIC))
        view = batch["views"][b, v].permute(1, 2, 0).numpy()
        error = min(np.abs(view.astype(int) - candidate.astype(int)).max()
                    for candidate in (expected, expected[:, ::-1]))
        assert error <= 2  # the flip is applied but not encoded, as in the original


def test_brightness_action_is_the_factor_applied():
    images = smooth_images(6)
    brightness_only = ObservationPipeline(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0, jitter_p=1.0,
                                          contrast=0.0, saturation=0.0, hue=0.0, grayscale_p=0.0, blur_p=0.0)
    batch = compose_batch(images, [0] * 6, num_views=2, generator=torch.Generator().manual_seed(0),
                          observation=brightness_only, target=TargetPipeline(**{**brightness_only.__dict__}))
    factor = batch["actions"][..., 4].exp()  # fixed normalisation: log of the factor
    expected = (batch["orig"].float().unsqueeze(1) * factor.view(6, 2, 1, 1, 1)).clamp(0, 255)
    assert (batch["views"].float() - expected).abs().max() <= 1.0
    assert (factor - 1).abs().max() > 0.1  # the factors really vary


def test_fixed_normalisation_uses_fractions_and_log_factors():
    g = torch.Generator().manual_seed(0)
    batch = compose_batch(random_images(8, 64), [0] * 8, num_views=3, generator=g)
    actions = batch["actions"]
    assert (actions[..., :4] >= 0).all() and (actions[..., :4] <= 1).all()
    # Factors lie in [0.6, 1.4] (brightness, contrast; saturation narrower): |log| <= -log 0.6.
    assert (actions[..., 4:7].abs() <= -math.log(0.6) + 1e-6).all() and (actions[..., 7].abs() <= 0.1 + 1e-6).all()
    assert torch.allclose(batch["rel_actions"], actions[:, 1:] - actions[:, :-1])


def test_legacy_view_norm_gives_unit_norm_columns_over_the_view_axis():
    batch = compose_batch(random_images(8), [0] * 8, num_views=4, generator=torch.Generator().manual_seed(0),
                          legacy_view_norm=True)
    norms = batch["actions"].norm(dim=1)  # (B, A): one norm per sample and coordinate
    nonzero = norms > 0  # e.g. hue is 0 in every view when no view was jittered
    assert torch.allclose(norms[nonzero], torch.ones_like(norms[nonzero]), atol=1e-5)
    assert nonzero[:, :4].all()
    assert torch.allclose(batch["rel_actions"], batch["actions"][:, 1:] - batch["actions"][:, :-1])


def test_bad_batches_raise_data_errors():
    with pytest.raises(DataError, match="num_views"):
        compose_batch(random_images(2), [0, 1], num_views=1)
    with pytest.raises(DataError, match="labels"):
        compose_batch(random_images(2), [0], num_views=2)
    with pytest.raises(DataError, match="RGB"):
        compose_batch(np.zeros((2, 32, 32), np.uint8), [0, 1], num_views=2)


@pytest.mark.gpu
def test_gpu_renders_like_cpu():
    images = random_images(8)
    cpu = compose_batch(images, [0] * 8, num_views=3, generator=torch.Generator().manual_seed(0))
    gpu = compose_batch(images, [0] * 8, num_views=3, generator=torch.Generator().manual_seed(0), device="cuda")
    assert (cpu["views"].int() - gpu["views"].cpu().int()).abs().max() <= 1
    assert torch.equal(cpu["actions"], gpu["actions"].cpu())
