"""Batched pixel operations of the paper's augmentations, with per-sample parameters.

Every op takes float images (N, C, H, W) with intensities in [0, 1] on any device and one parameter
per sample, and returns float images clamped to [0, 1] like torchvision's functional tensor ops.
The original pipeline ran on PIL images, which round to uint8 after every op, each op in its own way;
we stay in float and round once at the end (`to_uint8`). Measured against Pillow on photos (README,
"Faithful to the paper"): blur, solarize and flip exact; crop-resize, brightness, contrast, saturation
and grayscale within one grey level; hue up to ~13 (PIL's 8-bit HSV round trip, which the original
runs whenever colour jitter applies); whole views up to ~17, mean ~1.2. `augment_ops_pil` reproduces PIL's rounding
(`data.legacy_pil_rounding=true`).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # ITU-R 601-2 luma, the weights torchvision uses on tensors
PIL_BICUBIC_A = -0.5  # PIL's cubic kernel (the original resized PIL crops); torch's own uses -0.75


def to_unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] or float [0, 1] images -> float32 [0, 1]."""
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    return images.float()


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    return images.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(N,) parameters -> (N, 1, 1, 1), on the images' device and dtype, to broadcast over pixels."""
    return values.to(device=like.device, dtype=like.dtype).view(-1, 1, 1, 1)


# ---------------------------------------------------------------- crop + resize (+ flip)

def _pil_bicubic(x: torch.Tensor) -> torch.Tensor:
    a, x = PIL_BICUBIC_A, x.abs()
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return torch.where(x < 1.0, near, torch.where(x < 2.0, far, torch.zeros_like(x)))


def _span_matrices(length: torch.Tensor, in_size: int, out_size: int) -> torch.Tensor:
    """(N, out_size, in_size) PIL bicubic weights resizing the span [0, length) of an axis.

    Output pixel k is centred at source coordinate (k + 0.5)·length/out_size; taps outside the span
    get no weight and each row is renormalised (PIL crops first, so it never reads outside the
    box); when shrinking, the kernel is widened by the scale factor (PIL's antialiasing).
    """
    length = length.double().view(-1, 1, 1)
    scale = length / out_size
    centre = (torch.arange(out_size, dtype=torch.float64).view(1, -1, 1) + 0.5) * scale
    source = torch.arange(in_size, dtype=torch.float64).view(1, 1, -1)
    weights = _pil_bicubic((source + 0.5 - centre) / scale.clamp(min=1.0)) * (source < length)
    return (weights / weights.sum(dim=-1, keepdim=True)).float()


@functools.lru_cache(maxsize=16)
def _span_table(in_size: int, out_size: int) -> torch.Tensor:
    """Weights for every span length 0..in_size (row L for length L; row 0 is empty), built once."""
    empty = torch.zeros(1, out_size, in_size)
    return torch.cat([empty, _span_matrices(torch.arange(1, in_size + 1), in_size, out_size)])


def resample_matrices(offset: torch.Tensor, length: torch.Tensor, in_size: int, out_size: int,
                      table: torch.Tensor | None = None) -> torch.Tensor:
    """(N, out_size, in_size) matrices resizing the integer span [offset, offset + length) of an axis.

    PIL's bicubic resize of a crop, as a matrix: the span's weights are looked up by length and
    shifted by the offset (a table lookup, ~10x cheaper than evaluating the kernel per view).
    Identity when length == in_size == out_size. `table`: other weights by length (`augment_ops_pil`'s).
    """
    offset, length = offset.long().cpu(), length.long().cpu()
    table = _span_table(in_size, out_size) if table is None else table
    weights = table.index_select(0, length)  # span starting at 0
    shifted = torch.arange(in_size).view(1, -1) - offset.view(-1, 1)  # source index relative to the span
    index = shifted.clamp(min=0).unsqueeze(1).expand(-1, out_size, -1)
    return weights.gather(2, index) * (shifted >= 0).unsqueeze(1)


def resized_crop(images: torch.Tensor, boxes: torch.Tensor, out_size: int, flip: torch.Tensor | None = None,
                 table=_span_table, after_pass=lambda x: x.clamp_(0.0, 1.0)) -> torch.Tensor:
    """Crop boxes (N, 4) = (top, left, height, width) in source pixels, resize to out_size², flip.

    One batched matmul per axis (columns, then rows) instead of a per-sample loop; a horizontal
    flip is the column matrix read backwards, so it costs nothing. After each pass `after_pass`: a clip (bicubic
    overshoots at edges; PIL clips after each of its passes too), or `augment_ops_pil`'s fixed-point rounding with
    its `table` of weights by span length.
    """
    height, width = images.shape[-2:]
    boxes = boxes.cpu()
    rows = resample_matrices(boxes[:, 0], boxes[:, 2], height, out_size, table(height, out_size))
    cols = resample_matrices(boxes[:, 1], boxes[:, 3], width, out_size, table(width, out_size))
    if flip is not None:
        cols = torch.where(flip.cpu().view(-1, 1, 1), cols.flip(1), cols)
    rows, cols = rows.to(images.device, images.dtype), cols.to(images.device, images.dtype)
    n, c, h, w = images.shape
    across = after_pass(torch.bmm(images.reshape(n, c * h, w), cols.transpose(1, 2)))  # columns, (n, c·h, S)
    return after_pass(torch.einsum("nyh,nchx->ncyx", rows, across.view(n, c, h, out_size)))  # then rows


# ---------------------------------------------------------------- colour

def rgb_to_grayscale(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) -> (N, 1, H, W) luma."""
    r, g, b = images.unbind(dim=1)
    return (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b).unsqueeze(1)


def _blend(images: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """factor·images + (1 - factor)·other, clamped: torchvision's `_blend`."""
    f = _per_sample(factor, images)
    return (f * images + (1.0 - f) * other).clamp_(0.0, 1.0)


def adjust_brightness(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with black: scales intensities by the factor."""
    return _blend(images, torch.zeros_like(images), factor)


def adjust_contrast(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the mean grey level of each image."""
    mean = rgb_to_grayscale(images).mean(dim=(1, 2, 3), keepdim=True)
    return _blend(images, mean, factor)


def adjust_saturation(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the grayscale version of each image."""
    return _blend(images, rgb_to_grayscale(images), factor)


def rgb_to_hsv(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB -> HSV, hue in turns [0, 1), the formulas of torchvision's `_rgb2hsv`."""
    r, g, b = images.unbind(dim=1)
    maxc, minc = images.amax(dim=1), images.amin(dim=1)
    chroma = maxc - minc
    grey = chroma == 0  # hue undefined: 0, like torchvision and colorsys
    sat = chroma / torch.where(grey, torch.ones_like(maxc), maxc)
    safe = torch.where(grey, torch.ones_like(chroma), chroma)
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    hue = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    hue = torch.where(grey, torch.zeros_like(hue), hue)
    return torch.stack([torch.remainder(hue / 6.0, 1.0), sat, maxc], dim=1)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """Inverse of `rgb_to_hsv`: channel c = v - v·s·clamp(min(k, 4 - k), 0, 1), k = (n_c + 6h) mod 6."""
    h, s, v = (t.unsqueeze(1) for t in hsv.unbind(dim=1))
    n = torch.tensor([5.0, 3.0, 1.0], device=hsv.device, dtype=hsv.dtype).view(1, 3, 1, 1)
    k = torch.remainder(n + 6.0 * h, 6.0)
    return v - v * s * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)


def adjust_hue(images: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue by `shift` turns (in [-0.5, 0.5])."""
    hsv = rgb_to_hsv(images)
    hue = torch.remainder(hsv[:, 0] + shift.to(device=images.device, dtype=images.dtype).view(-1, 1, 1), 1.0)
    return hsv_to_rgb(torch.stack([hue, hsv[:, 1], hsv[:, 2]], dim=1)).clamp_(0.0, 1.0)


JITTER_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)  # order of the factors


def color_jitter(images: torch.Tensor, factors: torch.Tensor, order: torch.Tensor, applied: torch.Tensor,
                 jitter_ops: tuple = JITTER_OPS) -> torch.Tensor:
    """ColorJitter with per-sample factors (N, 4) applied in a per-sample order (N, 4) of op indices.

    Step t applies, to every sample, the op at position t of its order: each op runs once per
    step on the subset of samples that chose it, so the work is the same as a fixed order.
    Samples with `applied` False are left untouched (exactly, not through identity factors).
    `jitter_ops`: the four ops in JITTER_OPS's order (`augment_ops_pil.JITTER_OPS` on uint8 images).
    """
    images = images.clone()
    order, applied = order.to(images.device), applied.to(images.device)
    factors = factors.to(images.device)
    for step in range(order.shape[1]):
        for op_index, op in enumerate(jitter_ops):
            idx = torch.nonzero(applied & (order[:, step] == op_index)).flatten()
            if len(idx):
                images[idx] = op(images[idx], factors[idx, op_index])
    return images


def grayscale_where(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Replace the masked samples by their luma on all channels (torchvision's 3-channel grayscale)."""
    gray = rgb_to_grayscale(images).expand_as(images)
    return torch.where(_per_sample(mask, images).bool(), gray, images)


# ---------------------------------------------------------------- blur, solarize

def gaussian_kernels(sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """(N, k) normalised 1-d Gaussians sampled at integer offsets; sigma 0 gives the identity kernel."""
    half = (kernel_size - 1) / 2
    x = torch.linspace(-half, half, kernel_size, dtype=torch.float32, device=sigma.device).view(1, -1)
    s = sigma.float().view(-1, 1)
    pdf = torch.exp(-0.5 * (x / s.clamp(min=1e-6)) ** 2)
    delta = (x == 0).float().expand_as(pdf)
    kernels = torch.where(s > 0, pdf, delta)
    return kernels / kernels.sum(dim=1, keepdim=True)


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Per-sample Gaussian blur: reflect padding (like torchvision), then one grouped conv per axis.

    Separable, so a k×k blur costs 2k instead of k² multiply-adds per pixel; the grouped conv
    gives every (sample, channel) plane its own kernel in one call.
    """
    n, c, h, w = images.shape
    kernels = gaussian_kernels(sigma.to(images.device), kernel_size).to(images.dtype)
    kernels = kernels.repeat_interleave(c, dim=0)  # one kernel per (sample, channel) plane
    pad = kernel_size // 2
    planes = F.pad(images, (pad, pad, pad, pad), mode="reflect").reshape(1, n * c, h + 2 * pad, w + 2 * pad)
    planes = F.conv2d(planes, kernels.view(n * c, 1, kernel_size, 1), groups=n * c)
    planes = F.conv2d(planes, kernels.view(n * c, 1, 1, kernel_size), groups=n * c)
    return planes.view(n, c, h, w)


def solarize_where(images: torch.Tensor, mask: torch.Tensor, threshold: int = 128) -> torch.Tensor:
    """uint8 images: pixels >= threshold become 255 - x in the masked samples (torchvision's solarize).

    Runs on uint8 so the threshold compares the exact grey levels the original compared.
    """
    invert = (images >= threshold) & mask.to(images.device).view(-1, 1, 1, 1)
    return torch.where(invert, 255 - images, images)
