"""The paper's augmentations with the original pipeline's 8-bit rounding (`data.legacy_pil_rounding=true`).

The authors ran torchvision's transforms on PIL images: every op rounds to uint8, each in Pillow's own way, and
their views differ from our float pipeline (`augment_ops`) by up to ~13 grey levels after hue, ~1 after the other
ops, ~17 on whole views (README, "Faithful to the paper"). These ops reproduce Pillow's integer and float32
arithmetic, batched with per-sample parameters and on any device: on the tested photos they give Pillow's bytes
exactly, op by op and for whole views, blur within one level (tests/unit/data_pipeline/test_augment_ops_pil.py,
against Pillow's own calls):

* crop + bicubic resize: Pillow's two passes (horizontal, then vertical) with 22-bit fixed-point coefficients
  and a rounding to uint8 after each pass (`Resample.c`);
* brightness, contrast, saturation: `ImageEnhance` = `Image.blend` in float32, truncated (`Blend.c`); contrast
  blends with the rounded mean of the fixed-point grey image;
* hue: torchvision converts to 8-bit HSV and back (`Convert.c` rgb2hsv / hsv2rgb) and adds trunc(255 * shift)
  modulo 256 to the hue byte, even for a zero shift;
* grayscale: Pillow's fixed-point luma (19595 R + 38470 G + 7471 B + 2^15) >> 16;
* blur: torchvision's tensor blur on the uint8 picture (a k x k kernel, rounded half to even);
* solarize and flip are exact in both pipelines (`augment_ops.solarize_where`, the column matrix reversed).

Images are uint8 (N, 3, H, W) in and out. The fixed-point sums run in float64, where they are exact.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from data_pipeline import augment_ops as ops

PRECISION_BITS = 22  # Pillow's fixed-point coefficients for 8-bit images: 32 - 8 - 2 bits
LUMA_FIXED = (19595, 38470, 7471)  # Pillow's L = R 299/1000 + G 587/1000 + B 114/1000 in 16-bit fixed point


def _round_half_away(x: torch.Tensor) -> torch.Tensor:
    """C's round() for x >= 0 (torch.round rounds half to even); x - floor(x) is exact."""
    low = torch.floor(x)
    return low + (x - low >= 0.5).to(x.dtype)


# ---------------------------------------------------------------- crop + resize

def _pil_bicubic(x: float) -> float:
    a, x = ops.PIL_BICUBIC_A, abs(x)
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


def _fixed_point_row(length: int, in_size: int, out_size: int) -> list[list[float]]:
    """Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for a span [0, length) resized to out_size, as an
    (out_size, in_size) matrix of integer coefficients (units of 2^-22), in Pillow's double arithmetic."""
    scale = float(length) / out_size
    filterscale = max(scale, 1.0)
    support = 2.0 * filterscale
    inv_filterscale = 1.0 / filterscale
    rows = []
    for xx in range(out_size):
        center = 0.0 + (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), length) - xmin
        weights = [_pil_bicubic((x + xmin - center + 0.5) * inv_filterscale) for x in range(xmax)]
        total = 0.0
        for w in weights:
            total += w
        if total != 0.0:
            weights = [w / total for w in weights]
        row = [0.0] * in_size
        for x, w in enumerate(weights):
            row[x + xmin] = float(int((-0.5 if w < 0 else 0.5) + w * (1 << PRECISION_BITS)))
        rows.append(row)
    return rows


@functools.lru_cache(maxsize=16)
def _fixed_point_table(in_size: int, out_size: int) -> torch.Tensor:
    """(in_size + 1, out_size, in_size) float64: row L resizes a span of length L (row 0 empty), built once."""
    empty = [[0.0] * in_size for _ in range(out_size)]
    return torch.tensor([empty] + [_fixed_point_row(length, in_size, out_size) for length in range(1, in_size + 1)],
                        dtype=torch.float64)


def _fixed_point_pass(sums: torch.Tensor) -> torch.Tensor:
    """Pillow's clip8: (sum + 2^21) >> 22, clipped to [0, 255]; sums are exact integers in float64."""
    return torch.floor((sums + (1 << (PRECISION_BITS - 1))) / (1 << PRECISION_BITS)).clamp_(0, 255)


def resized_crop(images: torch.Tensor, boxes: torch.Tensor, out_size: int, flip: torch.Tensor | None = None
                 ) -> torch.Tensor:
    """`augment_ops.resized_crop` as PIL computes it: crop, bicubic resize in two rounded passes, flip."""
    out = ops.resized_crop(images.double(), boxes, out_size, flip, _fixed_point_table, _fixed_point_pass)
    return out.to(torch.uint8)


# ---------------------------------------------------------------- colour

def luma(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) uint8 -> (N, 1, H, W) uint8: Pillow's convert("L")."""
    r, g, b = images.int().unbind(dim=1)
    return ((LUMA_FIXED[0] * r + LUMA_FIXED[1] * g + LUMA_FIXED[2] * b + (1 << 15)) >> 16).to(torch.uint8).unsqueeze(1)


def _blend(degenerate: torch.Tensor, images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """`Image.blend(degenerate, images, factor)`: in1 + alpha * (in2 - in1) in float32 (alpha a C float), clipped
    and truncated to uint8."""
    alpha = factor.float().to(images.device).view(-1, 1, 1, 1)
    first = degenerate.float()
    return (first + alpha * (images.float() - first)).clamp_(0, 255).trunc_().to(torch.uint8)


def adjust_brightness(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """`ImageEnhance.Brightness`: a blend with black."""
    return _blend(torch.zeros_like(images), images, factor)


def adjust_contrast(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """`ImageEnhance.Contrast`: a blend with the grey level int(mean of the L image + 0.5)."""
    grey = luma(images)
    mean = grey.flatten(1).long().sum(dim=1).double() / grey[0].numel()
    level = torch.floor(mean + 0.5).view(-1, 1, 1, 1)
    return _blend(level.expand_as(images), images, factor)


def adjust_saturation(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """`ImageEnhance.Color`: a blend with the L image on every channel."""
    return _blend(luma(images).expand_as(images), images, factor)


def rgb_to_hsv_bytes(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) uint8 RGB -> uint8 HSV, Pillow's `rgb2hsv_row`: float32 where it declares float, double where
    it computes in double, truncated to bytes."""
    r, g, b = images.int().unbind(dim=1)
    maxc, minc = torch.maximum(torch.maximum(r, g), b), torch.minimum(torch.minimum(r, g), b)
    grey = maxc == minc
    chroma = torch.where(grey, torch.ones_like(maxc), maxc - minc).float()
    sat = chroma / maxc.clamp(min=1).float()
    rc, gc, bc = ((maxc - c).float() / chroma for c in (r, g, b))
    hue = torch.where(r == maxc, (bc - gc).double(),
                      torch.where(g == maxc, (2.0 + rc.double() - bc.double()).float().double(),
                                  (4.0 + gc.double() - rc.double()).float().double()))
    turns = hue / 6.0 + 1.0
    turns = torch.where(turns >= 1.0, turns - 1.0, turns).float()  # fmod(x, 1) for x in [5/6, 11/6), into a float
    hue_byte = torch.trunc(turns.double() * 255.0).clamp(0, 255)
    sat_byte = torch.trunc(sat.double() * 255.0).clamp(0, 255)
    zero = torch.zeros_like(hue_byte)
    return torch.stack([torch.where(grey, zero, hue_byte), torch.where(grey, zero, sat_byte), maxc.double()],
                       dim=1).to(torch.uint8)


def hsv_bytes_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """Inverse of `rgb_to_hsv_bytes`, Pillow's `hsv2rgb`: the sector i = floor(6h/255), p, q, t rounded (C round)."""
    h, s, v = hsv.double().unbind(dim=1)
    sixths = h * 6.0 / 255.0
    sector = torch.floor(sixths)
    f = (sixths - sector).float()
    fs = (s / 255.0).float()
    p = _round_half_away(v * (1.0 - fs.double())).clamp(0, 255)
    q = _round_half_away(v * (1.0 - (fs * f).double())).clamp(0, 255)
    t = _round_half_away(v * (1.0 - fs.double() * (1.0 - f.double()))).clamp(0, 255)
    # channel values of sectors 0..5: (v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)
    choices = torch.stack([v, t, p, q], dim=0)  # indices 0..3
    pick = torch.tensor([[0, 1, 2], [3, 0, 2], [2, 0, 1], [2, 3, 0], [1, 2, 0], [0, 2, 3]], device=hsv.device)
    which = pick[sector.long() % 6]  # (N, H, W, 3)
    rgb = torch.gather(choices, 0, which.permute(3, 0, 1, 2))  # (3, N, H, W)
    rgb = torch.where((s == 0).unsqueeze(0), v.unsqueeze(0), rgb)
    return rgb.permute(1, 0, 2, 3).to(torch.uint8)


def adjust_hue(images: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """torchvision's PIL hue: the HSV bytes' hue plus trunc(255 * shift) modulo 256 (numpy's wrapping uint8 add),
    back to RGB. `shift` float64 (a float32 shift can truncate to the next integer)."""
    hsv = rgb_to_hsv_bytes(images)
    step = torch.trunc(shift.double() * 255).long().remainder(256).to(images.device).view(-1, 1, 1)
    hue = (hsv[:, 0].long() + step).remainder(256).to(torch.uint8)
    return hsv_bytes_to_rgb(torch.stack([hue, hsv[:, 1], hsv[:, 2]], dim=1))


JITTER_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)  # the order of augment_ops


def grayscale_where(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """torchvision's RandomGrayscale on PIL: the L image on all three channels, in the masked samples."""
    gray = luma(images).expand_as(images)
    return torch.where(mask.to(images.device).view(-1, 1, 1, 1), gray, images)


# ---------------------------------------------------------------- blur

def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """torchvision's `gaussian_blur` of a PIL image: the uint8 picture as float32 0..255, the outer product of its
    1-d kernels, reflect padding, one k x k convolution per plane, rounded half to even."""
    n, c, h, w = images.shape
    half = (kernel_size - 1) * 0.5
    x = torch.linspace(-half, half, kernel_size, dtype=torch.float32, device=images.device).view(1, -1)
    pdf = torch.exp(-0.5 * (x / sigma.to(images.device).float().view(-1, 1)).pow(2))
    kernel1d = pdf / pdf.sum(dim=1, keepdim=True)
    kernels = torch.bmm(kernel1d.unsqueeze(2), kernel1d.unsqueeze(1))  # (n, k, k)
    kernels = kernels.repeat_interleave(c, dim=0).unsqueeze(1)  # one per (sample, channel) plane
    pad = kernel_size // 2
    planes = F.pad(images.float(), (pad, pad, pad, pad), mode="reflect").reshape(1, n * c, h + 2 * pad, w + 2 * pad)
    planes = F.conv2d(planes, kernels, groups=n * c).view(n, c, h, w)
    return torch.round(planes).clamp_(0, 255).to(torch.uint8)
