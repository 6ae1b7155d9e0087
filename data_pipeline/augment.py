"""The paper's parameterised augmentations (CIFAR100 / TinyImageNet) and the actions between views.

Per view we sample, with torchvision's semantics: a RandomResizedCrop box and a horizontal flip,
ColorJitter factors applied in a random order (p = 0.8), grayscale, Gaussian blur and solarize,
then render all views of a batch at once (`augment_ops`). Observation views and the target view
use different probabilities (docs/paper-and-original-code.md#cifar-100-dataset, #c7-target-view-augmentations-differ):
blur 1.0 vs 0.1, solarize 0.0 vs 0.2.

Raw action per view (docs/paper-and-original-code.md#augmentation-actions), A = 9, or 8 without blur:
    [i, j, h, w, brightness, contrast, saturation, hue, sigma]
i, j, h, w: crop box (top, left, height, width) in source pixels; jitter factors are 1, 1, 1, 0
when jitter was not applied; sigma is 0 when blur was not applied. Flip, jitter order, grayscale
and solarize are applied but not encoded, as in the original.

Action normalisation (docs/paper-and-original-code.md#c6-action-normalisation-across-views):
  * default ("fixed"): a per-coordinate map that depends on nothing but the view itself:
    box / source side, log of the three jitter factors, hue shift and sigma as they are. A view's
    action no longer depends on the other views or on V, and relative actions compose: the
    difference of log factors is the log of the factor ratio, box differences are in image units.
  * `legacy_view_norm=True`: the original code's L2 normalisation of each coordinate over the view
    axis (observations and target together), bit-compatible with the paper's runs.
Relative action j (view j -> j+1) = normalised(view j+1) - normalised(view j).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import numpy as np
import torch
import torch.nn.functional as F

from data_pipeline import augment_ops as ops
from data_pipeline import augment_ops_pil as pil
from data_pipeline.errors import DataError
from data_pipeline.sources.base import RENDER_INPUTS

CROP_ATTEMPTS = 10  # torchvision's RandomResizedCrop tries 10 boxes before its central fallback


def action_groups(blur: bool = True) -> dict[str, list[int]]:
    groups = {"crop": [0, 1, 2, 3], "jitter": [4, 5, 6, 7]}
    return {**groups, "blur": [8]} if blur else groups


def action_dim(blur: bool = True) -> int:
    return 9 if blur else 8


def blur_kernel_size(image_size: int) -> int:
    """The original's kernel size rule: 3 for 32 px, 7 for 64 px."""
    return 2 * round((image_size - 10) / 20) + 1


@dataclass(frozen=True)
class ObservationPipeline:
    """Augmentation of the observed views; the defaults are the paper's
    (docs/paper-and-original-code.md#cifar-100-dataset)."""

    scale: tuple[float, float] = (0.2, 1.0)  # crop area, fraction of the source area
    ratio: tuple[float, float] = (3 / 4, 4 / 3)  # crop aspect ratio w/h, sampled log-uniformly
    flip_p: float = 0.5
    jitter_p: float = 0.8  # ColorJitter as a whole, in a random op order per view
    brightness: float = 0.4  # factor ~ U(1 - b, 1 + b)
    contrast: float = 0.4  # factor ~ U(1 - c, 1 + c)
    saturation: float = 0.2  # factor ~ U(1 - s, 1 + s)
    hue: float = 0.1  # shift ~ U(-h, h), in turns of the colour wheel
    grayscale_p: float = 0.2
    blur_p: float = 1.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_kernel: int | None = None  # None: `blur_kernel_size(output size)`
    solarize_p: float = 0.0
    solarize_threshold: int = 128

    def __post_init__(self):
        probabilities = ("flip_p", "jitter_p", "grayscale_p", "blur_p", "solarize_p")
        problems = [f"{name} must be in [0, 1], got {getattr(self, name)}"
                    for name in probabilities if not 0.0 <= getattr(self, name) <= 1.0]
        problems += [msg for bad, msg in [
            (not 0 < self.scale[0] <= self.scale[1], f"need 0 < scale[0] <= scale[1], got {self.scale}"),
            (not 0 < self.ratio[0] <= self.ratio[1], f"need 0 < ratio[0] <= ratio[1], got {self.ratio}"),
            (not 0 <= self.brightness < 1, f"brightness must be in [0, 1), got {self.brightness}"),
            (not 0 <= self.contrast < 1, f"contrast must be in [0, 1), got {self.contrast}"),
            (not 0 <= self.saturation < 1, f"saturation must be in [0, 1), got {self.saturation}"),
            (not 0 <= self.hue <= 0.5, f"hue must be in [0, 0.5], got {self.hue}"),
            (not 0 < self.blur_sigma[0] <= self.blur_sigma[1], f"need 0 < blur_sigma[0] <= blur_sigma[1], "
                                                               f"got {self.blur_sigma}"),
            (self.blur_kernel is not None and (self.blur_kernel < 1 or self.blur_kernel % 2 == 0),
             f"blur_kernel must be odd and positive, got {self.blur_kernel}"),
        ] if bad]
        if problems:
            raise DataError(f"invalid {type(self).__name__}: {'; '.join(problems)}")

    def jitter_bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        low = [1 - self.brightness, 1 - self.contrast, 1 - self.saturation, -self.hue]
        high = [1 + self.brightness, 1 + self.contrast, 1 + self.saturation, self.hue]
        return torch.tensor(low, dtype=torch.float64), torch.tensor(high, dtype=torch.float64)


@dataclass(frozen=True)
class TargetPipeline(ObservationPipeline):
    """Augmentation of the target (last) view: BYOL-style asymmetry, rarer blur, some solarize."""

    blur_p: float = 0.1
    solarize_p: float = 0.2


@dataclass(frozen=True)
class ViewParams:
    """Sampled parameters of N views; every field has N rows."""

    boxes: torch.Tensor  # (N, 4) int64 top, left, height, width in source pixels
    flip: torch.Tensor  # (N,) bool
    jitter: torch.Tensor  # (N, 4) float64 brightness, contrast, saturation, hue (identity if not applied)
    jitter_order: torch.Tensor  # (N, 4) int64, a permutation of the 4 jitter ops
    jittered: torch.Tensor  # (N,) bool
    gray: torch.Tensor  # (N,) bool
    sigma: torch.Tensor  # (N,) float64, 0 = no blur
    solarize: torch.Tensor  # (N,) bool

    def __len__(self) -> int:
        return len(self.flip)

    @staticmethod
    def cat(parts: list["ViewParams"]) -> "ViewParams":
        return ViewParams(**{f.name: torch.cat([getattr(p, f.name) for p in parts]) for f in fields(ViewParams)})


# ---------------------------------------------------------------- sampling

def _uniform(low: float, high: float, shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator, dtype=torch.float64)


def _central_fallback_box(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int, int, int]:
    """torchvision's box when all attempts fail: the largest central crop within the ratio range."""
    in_ratio = width / height
    if in_ratio < min(ratio):
        h, w = int(round(width / min(ratio))), width
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def sample_crop_boxes(n: int, height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float],
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """(n, 4) int64 boxes (top, left, h, w), torchvision's `RandomResizedCrop.get_params`.

    The 10 attempts run side by side: each draws an area fraction and a log-uniform aspect ratio,
    and the first attempt whose box fits is kept; rows where none fits get the central fallback.
    """
    area = _uniform(scale[0], scale[1], (n, CROP_ATTEMPTS), generator) * (height * width)
    aspect = torch.exp(_uniform(math.log(ratio[0]), math.log(ratio[1]), (n, CROP_ATTEMPTS), generator))
    w = torch.round(torch.sqrt(area * aspect)).long()  # round half to even, like Python's round
    h = torch.round(torch.sqrt(area / aspect)).long()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.long().argmax(dim=1, keepdim=True)  # index of the first True (0 if none)
    h, w = h.gather(1, first).squeeze(1), w.gather(1, first).squeeze(1)
    top = (torch.rand(n, generator=generator, dtype=torch.float64) * (height - h + 1).clamp(min=1)).long()
    left = (torch.rand(n, generator=generator, dtype=torch.float64) * (width - w + 1).clamp(min=1)).long()
    boxes = torch.stack([top, left, h, w], dim=1)
    fallback = torch.tensor(_central_fallback_box(height, width, ratio))
    return torch.where(fits.any(dim=1, keepdim=True), boxes, fallback)


def _coin(p: float, n: int, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, generator=generator, dtype=torch.float64) < p


def sample_view_params(n: int, pipeline: ObservationPipeline, height: int, width: int,
                       generator: torch.Generator | None = None) -> ViewParams:
    """Parameters of n views of (height, width) sources, deterministic given the generator."""
    boxes = sample_crop_boxes(n, height, width, pipeline.scale, pipeline.ratio, generator)
    flip = _coin(pipeline.flip_p, n, generator)
    jittered = _coin(pipeline.jitter_p, n, generator)
    low, high = pipeline.jitter_bounds()
    factors = low + (high - low) * torch.rand(n, 4, generator=generator, dtype=torch.float64)
    identity = torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=torch.float64)
    jitter = torch.where(jittered.view(-1, 1), factors, identity)
    order = torch.rand(n, 4, generator=generator).argsort(dim=1)  # a uniform random permutation per row
    gray = _coin(pipeline.grayscale_p, n, generator)
    blurred = _coin(pipeline.blur_p, n, generator)
    sigma = torch.where(blurred, _uniform(*pipeline.blur_sigma, (n,), generator), torch.zeros(n, dtype=torch.float64))
    solarize = _coin(pipeline.solarize_p, n, generator)
    return ViewParams(boxes, flip, jitter, order, jittered, gray, sigma, solarize)


# ---------------------------------------------------------------- rendering

def _check_images(images: torch.Tensor) -> None:
    if images.dim() != 4 or images.shape[1] != 3 or not (images.dtype == torch.uint8 or images.is_floating_point()):
        raise DataError(f"augmentations need RGB images (N, 3, H, W), uint8 or float in [0, 1]; got "
                        f"{images.dtype} {tuple(images.shape)}")


def apply_view_params(images: torch.Tensor, params: ViewParams, out_size: int,
                      pipeline: ObservationPipeline, pil_rounding: bool = False) -> torch.Tensor:
    """Render views: images (N, 3, H, W) uint8/float + N params -> uint8 (N, 3, out_size, out_size).

    Op order as in the original: crop+resize+flip, jitter, grayscale, blur, solarize. In float, rounded once at the
    end; `pil_rounding`: rounded after every op as the original's PIL images were (`augment_ops_pil`).
    """
    _check_images(images)
    if pil_rounding:
        x = pil.resized_crop(_as_uint8(images), params.boxes, out_size, params.flip)
        x = ops.color_jitter(x, params.jitter, params.jitter_order, params.jittered, pil.JITTER_OPS)
        x = _blur_where(pil.grayscale_where(x, params.gray), params, out_size, pipeline, pil.gaussian_blur)
        return ops.solarize_where(x, params.solarize, pipeline.solarize_threshold)
    x = ops.resized_crop(ops.to_unit_float(images), params.boxes, out_size, params.flip)
    x = ops.color_jitter(x, params.jitter.float(), params.jitter_order, params.jittered)
    x = _blur_where(ops.grayscale_where(x, params.gray), params, out_size, pipeline, ops.gaussian_blur)
    return ops.solarize_where(ops.to_uint8(x), params.solarize, pipeline.solarize_threshold)


def _blur_where(x: torch.Tensor, params: ViewParams, out_size: int, pipeline: ObservationPipeline, blur
                ) -> torch.Tensor:
    """The views with sigma > 0 blurred; only that subset pays for the convolution (10 % of target views)."""
    blurred = torch.nonzero(params.sigma > 0).flatten()
    if len(blurred):
        kernel = pipeline.blur_kernel or blur_kernel_size(out_size)
        x[blurred.to(x.device)] = blur(x[blurred.to(x.device)], params.sigma[blurred], kernel)
    return x


def _as_uint8(images: torch.Tensor) -> torch.Tensor:
    return images if images.dtype == torch.uint8 else ops.to_uint8(images)


def resize_images(images: torch.Tensor, out_size: int, pil_rounding: bool = False) -> torch.Tensor:
    """Un-augmented images resized to out_size² (bicubic, identity at the same size), as uint8."""
    _check_images(images)
    n, _, height, width = images.shape
    full = torch.tensor([[0, 0, height, width]]).expand(n, 4)
    if pil_rounding:
        return pil.resized_crop(_as_uint8(images), full, out_size)
    return ops.to_uint8(ops.resized_crop(ops.to_unit_float(images), full, out_size))


# ---------------------------------------------------------------- actions

def raw_actions(params: ViewParams, blur: bool = True) -> torch.Tensor:
    """(N, 9) [i, j, h, w, brightness, contrast, saturation, hue, sigma] (N, 8 without blur)."""
    columns = [params.boxes.double(), params.jitter] + ([params.sigma.view(-1, 1)] if blur else [])
    return torch.cat(columns, dim=1).float()


def fixed_normalisation(raw: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Box in fractions of the source side, log jitter factors, hue and sigma unchanged."""
    out = raw.clone()
    out[..., [0, 2]] = raw[..., [0, 2]] / height
    out[..., [1, 3]] = raw[..., [1, 3]] / width
    out[..., 4:7] = torch.log(raw[..., 4:7])
    return out


def legacy_view_normalisation(raw: torch.Tensor) -> torch.Tensor:
    """The original code: each coordinate L2-normalised over the view axis of (B, V, A)."""
    return F.normalize(raw, p=2.0, dim=1)


def normalise_actions(raw: torch.Tensor, height: int, width: int, legacy_view_norm: bool = False) -> torch.Tensor:
    """(B, V, A) raw actions -> the absolute actions the model sees (see the module docstring)."""
    return legacy_view_normalisation(raw) if legacy_view_norm else fixed_normalisation(raw, height, width)


def relative_actions(actions: torch.Tensor) -> torch.Tensor:
    """(B, V, A) -> (B, V-1, A): index j is the action from view j to view j+1."""
    return actions[:, 1:] - actions[:, :-1]


def path_actions(actions: torch.Tensor) -> torch.Tensor:
    """(B, V, A) -> (B, V-1, A): index j is the net action from view 0 to view j+1 (a difference, as one step)."""
    return actions[:, 1:] - actions[:, :1]


# ---------------------------------------------------------------- batch composition

def _images_and_labels(images, labels) -> tuple[torch.Tensor, torch.Tensor]:
    """Records (dicts with "image" (H, W, 3) and "label") or a (B, H, W, 3) uint8 array -> NCHW, labels."""
    if isinstance(images, (list, tuple)) and images and isinstance(images[0], dict):
        labels = [record["label"] for record in images] if labels is None else labels
        images = np.stack([np.asarray(record["image"]) for record in images])
    images = torch.as_tensor(np.asarray(images) if not torch.is_tensor(images) else images)
    if images.dim() != 4 or images.shape[-1] != 3 or images.dtype != torch.uint8:
        raise DataError(f"compose_batch needs uint8 RGB images (B, H, W, 3) or records; got "
                        f"{images.dtype} {tuple(images.shape)}")
    if labels is None or len(labels) != len(images):
        raise DataError(f"compose_batch got {0 if labels is None else len(labels)} labels for {len(images)} images")
    return images.permute(0, 3, 1, 2).contiguous(), torch.as_tensor(labels, dtype=torch.int64).reshape(-1)


def compose_batch(images, labels=None, *, num_views: int, generator: torch.Generator | None = None,
                  out_size: int | None = None, observation: ObservationPipeline = ObservationPipeline(),
                  target: TargetPipeline = TargetPipeline(), blur: bool = True, legacy_view_norm: bool = False,
                  pil_rounding: bool = False, device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """A training batch of augmented sequences (the trainer's batch contract): `plan_batch`, then `render_batch`
    on `device` (default: the CPU).

    images: uint8 (B, H, W, 3) array/tensor, or a list of records {"image", "label"}.
    Returns views uint8 (B, V, 3, S, S) (first V-1 observation views, the target last), actions
    float32 (B, V, A), rel_actions float32 (B, V-1, A), path_actions float32 (B, V-1, A) (view 0 -> view j+1),
    label int64 (B,), orig uint8 (B, 3, S, S).
    Parameters are drawn on the CPU generator, so a seed gives the same batch on every device;
    `blur=False` drops the blur op and its action coordinate (the original's --no-blur); `pil_rounding` renders
    with the original's PIL rounding (`apply_view_params`).
    """
    planned = plan_batch(images, labels, num_views=num_views, generator=generator, observation=observation,
                         target=target, blur=blur, legacy_view_norm=legacy_view_norm)
    inputs = planned.pop(RENDER_INPUTS)
    return {**render_batch(inputs, torch.device(device or "cpu"), out_size, observation, target, pil_rounding),
            **planned}


def plan_batch(images, labels=None, *, num_views: int, generator: torch.Generator | None = None,
               observation: ObservationPipeline = ObservationPipeline(), target: TargetPipeline = TargetPipeline(),
               blur: bool = True, legacy_view_norm: bool = False) -> dict:
    """Every random draw of a batch (on the CPU generator), its actions and labels; under RENDER_INPUTS the source
    images uint8 (B, 3, H, W) and the views' parameters (`obs`: B·(V-1) observation views, `tgt`: B targets)."""
    if num_views < 2:
        raise DataError(f"compose_batch needs num_views >= 2 (observations plus the target), got {num_views}")
    sources, labels = _images_and_labels(images, labels)
    b, _, height, width = sources.shape
    if not blur:
        observation, target = replace(observation, blur_p=0.0), replace(target, blur_p=0.0)
    obs = sample_view_params(b * (num_views - 1), observation, height, width, generator)
    tgt = sample_view_params(b, target, height, width, generator)
    raw = torch.cat([raw_actions(obs, blur).view(b, num_views - 1, -1), raw_actions(tgt, blur).view(b, 1, -1)], 1)
    actions = normalise_actions(raw, height, width, legacy_view_norm)
    return {"actions": actions, "rel_actions": relative_actions(actions), "path_actions": path_actions(actions),
            "label": labels, RENDER_INPUTS: {"sources": sources, "obs": obs, "tgt": tgt}}


def render_batch(inputs: dict, device: torch.device, out_size: int | None = None,
                 observation: ObservationPipeline = ObservationPipeline(),
                 target: TargetPipeline = TargetPipeline(), pil_rounding: bool = False) -> dict[str, torch.Tensor]:
    """`plan_batch`'s render inputs -> views uint8 (B, V, 3, S, S) and orig uint8 (B, 3, S, S) on `device`
    (S = out_size, or the sources' side). No randomness: the same inputs give the same pixels anywhere the same
    ops run."""
    sources = inputs["sources"].to(device, non_blocking=True)
    obs, tgt = inputs["obs"], inputs["tgt"]
    b, _, height, _ = sources.shape
    size = out_size or height
    per_object = len(obs) // b
    obs_views = apply_view_params(sources.repeat_interleave(per_object, dim=0), obs, size, observation, pil_rounding)
    tgt_views = apply_view_params(sources, tgt, size, target, pil_rounding)
    views = torch.cat([obs_views.view(b, per_object, 3, size, size), tgt_views.view(b, 1, 3, size, size)], 1)
    return {"views": views, "orig": resize_images(sources, size, pil_rounding)}
