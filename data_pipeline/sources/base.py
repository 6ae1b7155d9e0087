"""The contract every dataset source implements, and small helpers they share.

Write time (raw files -> shards):

    read_split(root, split, **options) -> SourceSplit

  `SourceSplit.samples` yields one dict per sample, the webdataset fields as bytes (keys are
  extensions without the leading dot: "image.png", "label.cls", "latents.npy", ...);
  `num_samples` is known up front (progress bars, manifests); `fields` describes each key for the
  manifest; `dataset_info` holds at least DATASET_INFO_KEYS (num_classes, class_names, channels,
  height, width, mean, std; mean/std per channel, on [0, 1] intensities).

Load time (shards -> batches): `build_composer(manifest, options) -> Composer` sets one up from the
dataset's load-time options (its dataclass in `data_pipeline/datasets.py`); then, in DataLoader worker processes:

    composer.decode(sample)                          # dict of field bytes -> a record; raises on corrupt data
    composer.compose(records, num_views, generator)  # list of records -> the batch contract below

Composing is two halves, so that the views can be rendered where the model runs (`data.render_on=device`):

    composer.plan(records, num_views, generator)     # in the loader: every random draw, the actions and labels,
                                                     # and under RENDER_INPUTS the sources and drawn parameters
    composer.render(inputs, device)                  # the views (and any other rendered key) from those inputs,
                                                     # on `device`: no randomness, batched tensor ops

`compose` is `plan` then `render` on the CPU (`PlannedComposer`), so both places give the same batch.

The batch contract (docs/paper-and-original-code.md#batch-contract): `views` uint8 (B, V, C, S, S), the last view the
prediction target; `actions` float32 (B, V, A) absolute per view; `rel_actions` float32 (B, V-1, A), index j the action
from view j to view j+1; `path_actions` float32 (B, V-1, A), index j the net action from view 0 to
view j+1, computed the way the source computes one step (quaternions compose, angles and positions
add up), so `path_actions[:, 0] == rel_actions[:, 0]` (the path-integration probe's target,
docs/paper-and-original-code.md#path-integration); `label` int64 (B,); extra keys a probe needs may follow. All
randomness comes from `generator`, so a seed fixes the batch. A composer is a frozen dataclass (it is pickled
into worker processes) with `action_dim` and `action_groups` ({group name: action dims}).
"""

from __future__ import annotations

import ast
import functools
import io
import math
from dataclasses import dataclass
from typing import Any, Iterator, Protocol

import numpy as np
import torch
from PIL import Image

DATASET_INFO_KEYS = ("num_classes", "class_names", "channels", "height", "width", "mean", "std")


@dataclass
class SourceSplit:
    samples: Iterator[dict[str, bytes]]
    num_samples: int
    fields: dict[str, str]
    dataset_info: dict


RENDER_INPUTS = "render_inputs"  # a planned batch's key: what `render` turns into the views


class Composer(Protocol):
    action_dim: int
    action_groups: dict[str, list[int]]

    def decode(self, sample: dict[str, bytes]) -> Any: ...

    def plan(self, records: list, num_views: int, generator: torch.Generator) -> dict: ...

    def render(self, inputs: Any, device: torch.device) -> dict[str, torch.Tensor]: ...

    def compose(self, records: list, num_views: int, generator: torch.Generator) -> dict[str, torch.Tensor]: ...


class PlannedComposer:
    """`compose` for a composer that has `plan` and `render` (a mixin for the frozen composer dataclasses)."""

    def compose(self, records: list, num_views: int, generator: torch.Generator | None = None
                ) -> dict[str, torch.Tensor]:
        """`plan`, then `render` on the CPU: the batch a loader ships with `data.render_on=loader`."""
        return render_planned(self, self.plan(records, num_views, generator), torch.device("cpu"))


def render_planned(composer: Composer, planned: dict, device: torch.device) -> dict:
    """A planned batch with its render inputs replaced by what they render to (the views first)."""
    planned = dict(planned)
    rendered = composer.render(planned.pop(RENDER_INPUTS), device)
    return {**rendered, **planned}


def encode_png(image: np.ndarray) -> bytes:
    """Lossless PNG of a uint8 (H, W) or (H, W, 3) array."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def encode_jpeg(image: np.ndarray, quality: int = 95) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def decode_image(data: bytes, mode: str | None = None) -> np.ndarray:
    """PNG/JPEG bytes -> uint8 array (H, W) or (H, W, C); `mode` ("L", "RGB") converts first."""
    with Image.open(io.BytesIO(data)) as image:
        if mode is not None and image.mode != mode:
            image = image.convert(mode)
        return np.asarray(image).copy()


def looks_like_jpeg(data: bytes) -> bool:
    """Starts with a JPEG's SOI marker and ends with its EOI (trailing padding allowed): catches a truncated file
    for the price of two byte comparisons (a loader checks what the training process will decode)."""
    return data[:2] == b"\xff\xd8" and data.rstrip(b"\x00")[-2:] == b"\xff\xd9"


def decode_jpegs(blobs: list[bytes], device: torch.device) -> torch.Tensor:
    """JPEG bytes -> uint8 RGB (N, 3, H, W) on `device`: on CUDA with nvJPEG where torchvision is installed (the
    optional `gpu` extra), batched; elsewhere with Pillow in this process, then copied there. Every image must have
    the same size."""
    if device.type == "cuda":
        try:
            from torchvision.io import ImageReadMode, decode_jpeg
        except ImportError:  # the CPU install: no torchvision (README, quick start)
            decode_jpeg = None
        if decode_jpeg is not None:
            data = [torch.frombuffer(bytearray(blob), dtype=torch.uint8) for blob in blobs]
            return torch.stack(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
    images = np.stack([decode_image(blob, "RGB") for blob in blobs])
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(device, non_blocking=True)


RAW_IMAGE = "image.npy"  # uint8 (H, W, 3) as .npy: the CIFAR-100, Tiny-ImageNet and STL-10 writers' image field
RAW_IMAGE_WHY = ("raw uint8 (a .npy): decoding is a header read, where a PNG's inflate and unfiltering were most of "
                 "a loader's time once views are rendered on the GPU")


def decode_raw_image(data: bytes) -> np.ndarray:
    """`RAW_IMAGE` bytes -> a writable uint8 (H, W, 3) array; ValueError on anything else."""
    array = decode_npy(data)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"{RAW_IMAGE} is {array.dtype} {array.shape}, expected uint8 (H, W, 3)")
    return array.copy()


def encode_npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def decode_npy(data: bytes) -> np.ndarray:
    """The array of a .npy file (read-only: it shares `data`'s memory); no pickled objects. Shards repeat a few
    headers: each is parsed once (`_npy_header`), where numpy's `np.load` parses every one with `ast.literal_eval`,
    which cost more than the rest of a 3DIEBench sample's decoding. Raises ValueError on a malformed file."""
    if data[:6] != b"\x93NUMPY" or data[6:7] not in (b"\x01", b"\x02", b"\x03"):
        raise ValueError("not a .npy file")
    width = 2 if data[6] == 1 else 4  # the header length's bytes (format 1.0: 2, 2.0 and 3.0: 4)
    start = 8 + width + int.from_bytes(data[8:8 + width], "little")
    dtype, fortran_order, shape = _npy_header(bytes(data[8 + width:start]), data[6])
    array = np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=start)  # ValueError if too short
    return array.reshape(shape[::-1]).T if fortran_order else array.reshape(shape)


@functools.lru_cache(maxsize=256)
def _npy_header(header: bytes, version: int) -> tuple[np.dtype, bool, tuple[int, ...]]:
    try:
        fields = ast.literal_eval(header.decode("utf-8" if version == 3 else "latin1"))
        dtype = np.lib.format.descr_to_dtype(fields["descr"])
        fortran_order, shape = bool(fields["fortran_order"]), tuple(int(n) for n in fields["shape"])
    except (SyntaxError, ValueError, TypeError, KeyError) as err:
        raise ValueError(f"the .npy header {header[:80]!r} is malformed ({err})") from None
    if dtype.hasobject:
        raise ValueError("the .npy file holds Python objects, which are never unpickled from a shard")
    return dtype, fortran_order, shape


def encode_density_png(density: np.ndarray) -> bytes:
    """A non-negative map as a 16-bit grayscale PNG, scaled to its maximum: 65,536 levels of relative
    density (only relative values matter to a sampler), a fraction of float storage once compressed."""
    density = np.asarray(density, dtype=np.float64)
    peak = float(density.max())
    if not np.isfinite(density).all() or density.min() < 0 or peak <= 0:
        raise ValueError("a density must be finite, non-negative and not all zero")
    return encode_png(np.round(density / peak * 65535).astype(np.uint16))


def decode_density_png(data: bytes, size: tuple[int, int]) -> np.ndarray:
    """`encode_density_png` bytes -> float32 (height, width) = `size`, bilinearly resized, summing to 1."""
    with Image.open(io.BytesIO(data)) as image:
        plane = np.asarray(image, dtype=np.float32)
    if plane.shape != size:
        plane = np.asarray(Image.fromarray(plane, mode="F").resize(size[::-1], Image.BILINEAR))
    plane = np.maximum(plane, 0.0)
    total = float(plane.sum())
    if not np.isfinite(total) or total <= 0:
        raise ValueError("the density has no mass")
    return plane / total


def encode_label(label: int) -> bytes:
    return str(int(label)).encode("ascii")


def decode_label(data: bytes, num_classes: int) -> int:
    label = int(data.decode("ascii"))
    if not 0 <= label < num_classes:
        raise ValueError(f"label {label} outside 0..{num_classes - 1}")
    return label
