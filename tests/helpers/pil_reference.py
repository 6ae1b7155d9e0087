"""The original augmentation pipeline, one view at a time through Pillow's own calls (what torchvision's transforms
call on a PIL image), for the same drawn parameters as `data_pipeline.augment`: the reference that
`augment_ops_pil` (`data.legacy_pil_rounding=true`) must reproduce, and against which the float pipeline's
differences are measured. Natural photos: tiles of matplotlib's sample photograph (a dependency already).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps

PHOTO = Path(matplotlib.__file__).parent / "mpl-data" / "sample_data" / "grace_hopper.jpg"


def photo_tiles(count: int, size: int, seed: int = 0) -> np.ndarray:
    """(count, size, size, 3) uint8: random squares of the photograph, scaled down to `size`."""
    rng = np.random.default_rng(seed)
    with Image.open(PHOTO) as image:
        photo = image.convert("RGB")
    width, height = photo.size
    tiles = []
    for _ in range(count):
        side = int(rng.integers(size, min(width, height) // 2))
        x, y = int(rng.integers(0, width - side)), int(rng.integers(0, height - side))
        tiles.append(np.array(photo.crop((x, y, x + side, y + side)).resize((size, size), Image.BILINEAR)))
    return np.stack(tiles)


def resize(image: Image.Image, size: int) -> Image.Image:
    """Pillow's bicubic resize, its horizontal pass first then its vertical one, as every Pillow before 13 did
    (Pillow 13 goes vertical first when the height shrinks much more than the width: python-pillow/Pillow#9549).
    Each call resizes one axis only, so each is one of Pillow's own passes."""
    return image.resize((size, image.height), Image.BICUBIC).resize((size, size), Image.BICUBIC)


def adjust_hue(image: Image.Image, shift: float) -> Image.Image:
    """torchvision's `adjust_hue` for PIL images: 8-bit HSV, the hue byte plus uint8(shift * 255), back to RGB."""
    h, s, v = image.convert("HSV").split()
    hue = np.array(h, dtype=np.uint8)
    hue += np.array(shift * 255).astype(np.uint8)
    return Image.merge("HSV", (Image.fromarray(hue, "L"), s, v)).convert("RGB")


ENHANCE = (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color)  # jitter ops 0, 1, 2; 3 is hue


def jitter(image: Image.Image, factors, op: int) -> Image.Image:
    return adjust_hue(image, float(factors[3])) if op == 3 else ENHANCE[op](image).enhance(float(factors[op]))


def blur(image: Image.Image, sigma: float, kernel_size: int) -> Image.Image:
    """torchvision's `gaussian_blur` on a PIL image: to a float tensor 0..255, the outer product of the 1-d
    kernels, reflect padding, one convolution, rounded back to uint8."""
    half = (kernel_size - 1) * 0.5
    x = torch.linspace(-half, half, steps=kernel_size)
    pdf = torch.exp(-0.5 * (x / sigma).pow(2))
    kernel1d = pdf / pdf.sum()
    kernel = torch.mm(kernel1d[:, None], kernel1d[None, :]).expand(3, 1, kernel_size, kernel_size)
    pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1).float().unsqueeze(0)
    pad = kernel_size // 2
    out = torch.nn.functional.conv2d(torch.nn.functional.pad(pixels, [pad] * 4, mode="reflect"), kernel, groups=3)
    return Image.fromarray(torch.round(out[0]).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy())


def render_view(source: np.ndarray, params, index: int, out_size: int, kernel_size: int, threshold: int = 128
                ) -> np.ndarray:
    """View `index` of `params` (`augment.ViewParams`) from a (H, W, 3) uint8 source, as the original rendered it:
    RandomResizedCrop, flip, ColorJitter in its drawn order, RandomGrayscale, GaussianBlur, RandomSolarize."""
    top, left, height, width = params.boxes[index].tolist()
    image = resize(Image.fromarray(source).crop((left, top, left + width, top + height)), out_size)
    if params.flip[index]:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    if params.jittered[index]:
        for op in params.jitter_order[index].tolist():
            image = jitter(image, params.jitter[index].tolist(), op)
    if params.gray[index]:
        image = image.convert("L").convert("RGB")
    if params.sigma[index] > 0:
        image = blur(image, float(params.sigma[index]), kernel_size)
    if params.solarize[index]:
        image = ImageOps.solarize(image, threshold)
    return np.array(image)
