"""Glimpse sequences for predictive learning across saccades (PLS: STL-10, ImageNet), at load time.

One sequence = N fixations on one image (docs/paper-and-original-code.md#stl-10-glimpses, #imagenet-glimpses): each
fixation is drawn from the image's saliency map (or uniformly), then an F x F fovea is cut around it. The first N-1
foveae are the observations, the last the prediction target. Absolute action = the fixation (row / S, col / S)
on the S x S image; relative action j = position j+1 - position j (docs/paper-and-original-code.md#glimpse-actions).

Fixation sampling, per glimpse and for the whole batch at once (one draw per glimpse):
  1. draw a pixel (row, col) from the current map (`use_saliency` and the record has a map; a
     record without one starts from a uniform map), else uniformly over the S² pixels, like the
     original, whose uniform branch draws from a fresh uniform map every time (so IOR has no effect
     there); the original's flat index idx gives row = idx // S, col = idx % S, the same pixel;
  2. inhibition of return: zero the map in the square [row - F//2, row + F//2] x
     [col - F//2, col + F//2] (inclusive, 33 x 33 for F = 32), add 1e-16 everywhere, renormalise.

Fovea extraction reproduces the original sampling grid: bilinear `grid_sample` (align_corners=False)
at F points spaced F/(F-1) px, spanning ±F/2 px around pixel coordinate c - 0.5, so fovea pixel
(F//2, F//2) sits (1/(2(F-1)) px off) on the fixated pixel. Outside the image the fovea is `fill`
(black by default, as in the STL-10 original; the ImageNet original cut patches from the
normalised image, so its padding was the mean colour: pass `fill=imagenet.MEAN` for parity).
The original cut each patch at the *transpose* of the sampled fixation
(docs/paper-and-original-code.md#c1-fovea-transposition); we cut at the fixation itself, and `legacy_transpose=True`
brings the bug back (the action still reports (row, col)).

`crop` (ImageNet training, docs/paper-and-original-code.md#c3-imagenet-saliency-not-cropped): a RandomResizedCrop box
(torchvision's sampling, `augment.sample_crop_boxes`) cut from the image *and* its saliency map, both resized to crop²
(bilinear with antialiasing, torchvision's tensor semantics; the map is then clamped at 0 and
renormalised), before fixations are drawn. The original left the map uncropped. Without `crop`,
each image is centre-cropped to a square of its shorter side: a no-op for STL-10 (96²), and for
ImageNet shards (shorter side 224) the paper's validation CenterCrop(224), except that the
original resized to 256 first (so it saw 87.5 % of the shorter side; we see all of it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from data_pipeline.augment import sample_crop_boxes
from data_pipeline.errors import DataError
from data_pipeline.sources.base import (
    RAW_IMAGE,
    RENDER_INPUTS,
    PlannedComposer,
    decode_density_png,
    decode_image,
    decode_npy,
    decode_raw_image,
)

IMAGE_FIELDS = (RAW_IMAGE, "image.png", "image.jpg")  # STL-10: raw (PNG from the earlier writer); ImageNet: JPEG
SALIENCY_FIELD = "saliency.npy"  # STL-10: float16 at the image size
SALIENCY_PNG = "saliency.png"  # ImageNet: relative density at a fraction of the size (`encode_density_png`)
LABEL_FIELD = "label.cls"
IOR_FLOOR = 1e-16  # an inhibited pixel's weight, relative to the map's mass (the original's floor)


# ---------------------------------------------------------------- fixations

def _inverse_cdf(weights: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One index per row of weights (B, K) >= 0: the first whose running sum exceeds u · total."""
    cdf = weights.to(torch.float64).cumsum(dim=1)
    u = torch.rand(weights.shape[0], 1, generator=generator, dtype=torch.float64, device=weights.device)
    return torch.searchsorted(cdf, u * cdf[:, -1:], right=True).squeeze(1).clamp_(max=weights.shape[1] - 1)


def draw_positions(weights: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One (row, col) per map of weights (B, H, W) >= 0, drawn with probability proportional to the weight.

    `torch.multinomial`'s distribution over the flat index, drawn in two steps: a row by its total
    weight, then a column within it. Both running sums are only H or W long, so they are float64
    (the 1e-16 floor of inhibited pixels cannot swallow small weights) and cheap: several times
    faster than `multinomial` or a flat float64 inverse CDF on CPU for STL-10 batches (512 x 96²).
    """
    rows = _inverse_cdf(weights.sum(dim=2), generator)
    within = weights[torch.arange(weights.shape[0], device=weights.device), rows]  # (B, W)
    return rows, _inverse_cdf(within, generator)


def sample_fixations(maps: torch.Tensor | None, num: int, size: int, fovea_size: int, inhibition_of_return: bool,
                     generator: torch.Generator | None, batch: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, cols), each int64 (B, num): fixations in sampling order on S x S images.

    maps: (B, S, S) non-negative weights (need not sum to 1; a map with no mass counts as uniform),
    or None for uniform draws (then `batch` gives B). One draw per glimpse serves the whole batch.
    """
    if maps is None:
        flat = torch.randint(0, size * size, (batch, num), generator=generator)
        return flat // size, flat % size
    current = maps.to(torch.float32, copy=True)  # (unnormalised: draws are proportional to the weights)
    current[current.sum(dim=(1, 2)) <= 0] = 1.0  # a map with no mass: uniform
    radius = fovea_size // 2
    window = torch.arange(-radius, radius + 1)
    rows, cols = [], []
    for glimpse in range(num):
        row, col = draw_positions(current, generator)
        rows.append(row)
        cols.append(col)
        if inhibition_of_return and glimpse < num - 1:  # (after the last draw nothing reads the map)
            # The square of side 2·radius+1 around each fixation drops to the floor. The original zeroes it, adds
            # the floor everywhere and renormalises; draws are proportional to the weights, so scaling a map changes
            # nothing, and the floor only shows where a weight is 0 (a float32 weight + 1e-16 of the mass is that
            # weight). One scatter into the windows does the same: the whole-map passes were the loader's largest
            # cost for STL-10 once the glimpses are cut on the device. (Indices clamped at the border name border
            # pixels of the window twice: the same value twice.)
            near_rows = (row.view(-1, 1) + window).clamp_(0, size - 1).unsqueeze(2)  # (B, 2r+1, 1)
            near_cols = (col.view(-1, 1) + window).clamp_(0, size - 1).unsqueeze(1)  # (B, 1, 2r+1)
            flat = (torch.arange(len(row)).view(-1, 1, 1) * size * size + near_rows * size + near_cols).view(-1)
            floors = current.sum(dim=(1, 2)) * IOR_FLOOR  # the floor relative to each map's mass
            current.view(-1).scatter_(0, flat, floors.repeat_interleave(len(window) ** 2))
    return torch.stack(rows, dim=1), torch.stack(cols, dim=1)


# ---------------------------------------------------------------- foveae

def fovea_grid(rows: torch.Tensor, cols: torch.Tensor, size: int, fovea_size: int) -> torch.Tensor:
    """(B, N·F, F, 2) `grid_sample` coordinates of the N foveae centred at (rows, cols), stacked along y.

    The original's grid: centre 2c/S - 1 in normalised units (pixel c - 0.5), offsets
    linspace(-1, 1, F)·F/S (±F/2 px).
    """
    b, n = rows.shape
    offsets = torch.linspace(-1.0, 1.0, fovea_size, device=rows.device) * (fovea_size / size)
    centre_y = (rows.float() * 2.0 / size - 1.0).view(b, n, 1, 1)
    centre_x = (cols.float() * 2.0 / size - 1.0).view(b, n, 1, 1)
    y = (centre_y + offsets.view(1, 1, -1, 1)).expand(b, n, fovea_size, fovea_size)
    x = (centre_x + offsets.view(1, 1, 1, -1)).expand(b, n, fovea_size, fovea_size)
    return torch.stack([x, y], dim=-1).reshape(b, n * fovea_size, fovea_size, 2)


def extract_foveae(images: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, fovea_size: int,
                   legacy_transpose: bool = False, fill: tuple[float, float, float] = (0.0, 0.0, 0.0)
                   ) -> torch.Tensor:
    """images float (B, C, S, S) in [0, 1], fixations (B, N) -> foveae float (B, N, C, F, F).

    All B·N foveae come from one `grid_sample`: each image's N grids are stacked along the output
    height, so no image is copied N times. Outside the image the fovea takes the `fill` colour.
    """
    b, c, size, _ = images.shape
    n = rows.shape[1]
    if legacy_transpose:
        rows, cols = cols, rows  # the original's bug: the patch lands on the transposed fixation
    shift = torch.tensor(fill, dtype=images.dtype, device=images.device).view(1, c, 1, 1)
    grid = fovea_grid(rows, cols, size, fovea_size).to(images.device)
    out = F.grid_sample(images - shift, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + shift
    return out.view(b, c, n, fovea_size, fovea_size).permute(0, 2, 1, 3, 4)


# ---------------------------------------------------------------- crops

def _resize(plane: torch.Tensor, size: int) -> torch.Tensor:
    """(C, h, w) float -> (C, size, size), bilinear with antialiasing (torchvision's tensor Resize)."""
    if plane.shape[-2:] == (size, size):
        return plane
    return F.interpolate(plane.unsqueeze(0), size=(size, size), mode="bilinear", align_corners=False,
                         antialias=True).squeeze(0)


def _renormalise(density: torch.Tensor) -> torch.Tensor:
    density = density.clamp(min=0.0)
    total = density.sum()
    return density / total if total > 0 else torch.full_like(density, 1.0 / density.numel())


@dataclass(frozen=True)
class GlimpseComposer(PlannedComposer):
    """Records {"image", "saliency", "label"} -> batches of glimpse sequences (see the module docstring)."""

    fovea_size: int = 32  # F, the paper's --fovea-size (STL-10 hard-codes 32)
    use_saliency: bool = True  # --use-sal: draw fixations from the saliency map, else uniformly
    inhibition_of_return: bool = True  # --ior
    legacy_transpose: bool = False  # the original's fovea transposition
    # (docs/paper-and-original-code.md#c1-fovea-transposition)
    crop: int | None = None  # RandomResizedCrop output side (ImageNet training, 224); None: centre square
    crop_scale: tuple[float, float] = (0.08, 1.0)  # crop area, fraction of the image (torchvision's default)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # crop aspect ratio w/h
    fill: tuple[float, float, float] = (0.0, 0.0, 0.0)  # fovea colour outside the image, on [0, 1]

    action_dim: ClassVar[int] = 2

    @property
    def action_groups(self) -> dict[str, list[int]]:
        return {"position": [0, 1]}

    def __post_init__(self):
        problems = [msg for bad, msg in [
            (self.fovea_size < 1, f"fovea_size must be positive, got {self.fovea_size}"),
            (self.crop is not None and self.crop < 1, f"crop must be a positive side or None, got {self.crop}"),
            (not 0 < self.crop_scale[0] <= self.crop_scale[1], f"need 0 < crop_scale[0] <= crop_scale[1], "
                                                               f"got {self.crop_scale}"),
            (not 0 < self.crop_ratio[0] <= self.crop_ratio[1], f"need 0 < crop_ratio[0] <= crop_ratio[1], "
                                                               f"got {self.crop_ratio}"),
            (len(self.fill) != 3, f"fill must be an RGB triple, got {self.fill}"),
        ] if bad]
        if problems:
            raise DataError(f"invalid GlimpseComposer: {'; '.join(problems)}")

    # ------------------------------------------------------------ decode

    def decode(self, sample: dict[str, bytes]) -> dict:
        """Shard sample -> {"image": uint8 (H, W, 3), "saliency": float32 (H, W) or None, "label": int}.

        Raises ValueError on a missing field or a map that does not fit the image.
        """
        image_field = next((f for f in IMAGE_FIELDS if f in sample), None)
        if image_field is None:
            raise ValueError(f"sample has no image field ({' or '.join(IMAGE_FIELDS)}); fields: {sorted(sample)}")
        if LABEL_FIELD not in sample:
            raise ValueError(f"sample has no {LABEL_FIELD} field; fields: {sorted(sample)}")
        try:
            image = (decode_raw_image(sample[image_field]) if image_field == RAW_IMAGE
                     else decode_image(sample[image_field], mode="RGB"))
            saliency = None
            if SALIENCY_FIELD in sample:
                saliency = decode_npy(sample[SALIENCY_FIELD]).astype(np.float32, copy=False)
            elif SALIENCY_PNG in sample:
                saliency = decode_density_png(sample[SALIENCY_PNG], image.shape[:2])
        except Exception as err:  # noqa: BLE001 - PIL and numpy raise OSError, ValueError, EOFError... on broken bytes
            raise ValueError(f"{image_field} or its saliency map is unreadable: {err}") from None
        label = int(sample[LABEL_FIELD].decode("ascii"))  # ValueError on anything but an integer
        if label < -1:
            raise ValueError(f"label {label} is negative (only -1, 'unlabelled', is allowed)")
        if saliency is not None:
            if saliency.shape != image.shape[:2]:
                raise ValueError(f"saliency map {saliency.shape} does not match the image {image.shape[:2]}")
            if not np.isfinite(saliency).all() or saliency.min() < 0 or saliency.sum() <= 0:
                raise ValueError("saliency map has non-finite or negative values, or no mass")
        return {"image": image, "saliency": saliency, "label": label}

    # ------------------------------------------------------------ compose

    def _square_images(self, records: list[dict], generator: torch.Generator | None
                       ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Images: centred squares as uint8 (B, S, S, 3), crops as float (B, 3, S, S) on [0, 1]; and maps (B, S, S)
        (None without saliency).

        Records differ in size (ImageNet), so the crop runs per record; everything after it is batched.
        """
        with_maps = self.use_saliency and any(r["saliency"] is not None for r in records)
        if self.crop is None:
            return self._centre_squares(records, with_maps)
        images, maps = [], []
        for record in records:
            image = torch.from_numpy(np.ascontiguousarray(record["image"])).permute(2, 0, 1).float().div_(255.0)
            height, width = image.shape[-2:]
            top, left, h, w = sample_crop_boxes(1, height, width, self.crop_scale, self.crop_ratio,
                                                generator)[0].tolist()
            images.append(_resize(image[:, top:top + h, left:left + w], self.crop))
            if with_maps and record["saliency"] is None:  # no map: a uniform start
                maps.append(torch.full((self.crop, self.crop), 1.0 / self.crop ** 2))
            elif with_maps:
                density = torch.from_numpy(np.ascontiguousarray(record["saliency"])).float()
                maps.append(_renormalise(_resize(density[None, top:top + h, left:left + w], self.crop)[0]))
        return torch.stack(images), (torch.stack(maps) if with_maps else None)

    @staticmethod
    def _centre_squares(records: list[dict], with_maps: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The centre square of the shorter side of every image (and map), stacked in one go.

        Stored ImageNet images share their shorter side, so their squares stack whatever their shapes."""
        sides = {min(np.shape(r["image"])[:2]) for r in records}
        if len(sides) > 1:
            raise ValueError(f"records have different shorter sides {sorted(sides)}; set `crop` to resize them")
        side = sides.pop()

        def square(array: np.ndarray) -> np.ndarray:
            top, left = (array.shape[0] - side) // 2, (array.shape[1] - side) // 2
            return array[top:top + side, left:left + side]

        # (B, S, S, 3): made (B, 3, S, S) where rendered, as a view; a uint8 transpose here was a third of a
        # loader's time once the glimpses are cut on the device
        images = torch.from_numpy(np.stack([square(r["image"]) for r in records]))
        if not with_maps:
            return images, None
        uniform = np.full((side, side), 1.0 / side ** 2, dtype=np.float32)  # records without a map
        maps = np.stack([uniform if r["saliency"] is None else square(r["saliency"]) for r in records])
        return images, torch.from_numpy(maps.astype(np.float32, copy=False))

    def plan(self, records: list[dict], num_views: int, generator: torch.Generator | None = None) -> dict:
        """Records -> "actions" float32 (B, N, 2) = (row/S, col/S), "rel_actions" float32 (B, N-1, 2),
        "path_actions" float32 (B, N-1, 2), "label" int64 (B,), N = num_views glimpses; to render: the square
        images and the drawn fixations."""
        if num_views < 2:
            raise DataError(f"glimpse sequences need num_views >= 2 (observations plus the target), got {num_views}")
        if not records:
            raise ValueError("compose got no records")
        images, maps = self._square_images(records, generator)
        size = images.shape[-2]  # (B, S, S, 3) or (B, 3, S, S)
        rows, cols = sample_fixations(maps, num_views, size, self.fovea_size, self.inhibition_of_return,
                                      generator, batch=len(records))
        actions = torch.stack([rows, cols], dim=-1).float() / size
        return {"actions": actions, "rel_actions": actions[:, 1:] - actions[:, :-1],
                "path_actions": actions[:, 1:] - actions[:, :1],  # net saccade displacement from glimpse 1
                "label": torch.tensor([r["label"] for r in records], dtype=torch.int64),
                RENDER_INPUTS: {"images": images, "rows": rows, "cols": cols}}

    def render(self, inputs: dict, device: torch.device) -> dict[str, torch.Tensor]:
        """"views" uint8 (B, N, 3, F, F): the foveae cut at the fixations, on `device`."""
        images = inputs["images"].to(device, non_blocking=True)
        if images.dtype == torch.uint8:  # centre squares, (B, S, S, 3) (`_centre_squares`)
            images = images.permute(0, 3, 1, 2).float().div_(255.0)
        rows, cols = (inputs[key].to(device, non_blocking=True) for key in ("rows", "cols"))
        foveae = extract_foveae(images, rows, cols, self.fovea_size, self.legacy_transpose, self.fill)
        return {"views": foveae.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)}


def build_composer(manifest, options) -> GlimpseComposer:
    """The composer of an STL-10 or ImageNet shard set, from its load-time options (`datasets.GlimpseOptions`;
    ImageNet's add `crop_size`, the random resized crop before the glimpses)."""
    return GlimpseComposer(fovea_size=options.fovea_size, use_saliency=options.use_saliency,
                           inhibition_of_return=options.inhibition_of_return,
                           legacy_transpose=options.legacy_patch_transpose, crop=getattr(options, "crop_size", None))
