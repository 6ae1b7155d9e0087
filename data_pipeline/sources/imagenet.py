"""ImageNet-1k for PLS (docs/paper-and-original-code.md#imagenet-glimpses): class folders of JPEGs (+ per-image saliency
maps) -> shard samples.

Layout: `<root>/{train,val}/<class>/<id>.JPEG` (val sorted into class folders, e.g. by the usual
valprep.sh). Class index = position in the *sorted* list of class folders, so train and val agree
(the original used unsorted `os.listdir`, docs/paper-and-original-code.md#c4-unsorted-imagenet-classes); a split whose
class folders differ from its sibling split's is refused.

Saliency (optional here): `<saliency_root>/<split>/<class>/<id>_sal.npy` (what the original loader
reads) or `<id>-sal.npy`
(what its extraction script writes, docs/paper-and-original-code.md#c2-imagenet-saliency-file-names); a 2-D float
density at the image's native resolution.

Stored at a fixed scale so shards stay small and load-time work is bounded: the image is resized
so its shorter side is `image_size` (bilinear, PIL's antialiased resize; the paper's --img-size
224 by default) and re-encoded as JPEG; the map is resampled to the same size (bilinear on the
density, clamped at 0, renormalised to sum 1). Load time (`glimpses.GlimpseComposer`) then takes
a RandomResizedCrop of image and map together (training) or their centre square (validation).

Fields per sample:
    image.jpg     RGB, shorter side image_size
    saliency.png  fixation density at 1/4 of the image's size, 16-bit PNG (only with saliency_root)
    label.cls     class index
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from data_pipeline.errors import DataError
from data_pipeline.sources.base import SourceSplit, encode_density_png, encode_jpeg, encode_label
from data_pipeline.sources.stl10 import density16

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]
SPLITS = ("train", "val")
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
SALIENCY_SUFFIXES = ("_sal.npy", "-sal.npy")  # the loader's and the extraction script's names
JPEG_QUALITY = 95
SALIENCY_STRIDE = 4  # maps are stored at 1/4 of the image side (see `load_saliency`)


def class_folders(split_dir: Path) -> list[str]:
    return sorted(entry.name for entry in os.scandir(split_dir) if entry.is_dir())


def list_images(split_dir: Path, classes: list[str]) -> list[tuple[Path, int]]:
    """(path, class index) of every image, classes in sorted order, files sorted within a class."""
    found = []
    for index, name in enumerate(classes):
        files = sorted(entry.name for entry in os.scandir(split_dir / name)
                       if entry.is_file() and entry.name.lower().endswith(IMAGE_SUFFIXES))
        found += [(split_dir / name / f, index) for f in files]
    return found


def check_classes(root: Path, split: str, classes: list[str]) -> None:
    """The other split, when present, must have the same class folders, or labels would disagree."""
    for other in SPLITS:
        other_dir = root / other
        if other != split and other_dir.is_dir():
            theirs = class_folders(other_dir)
            if theirs and theirs != classes:
                diff = sorted(set(classes) ^ set(theirs))
                raise DataError(f"class folders of {root / split} and {other_dir} differ ({len(diff)} classes, "
                                f"e.g. {diff[:3]}); class indices would not match, give both splits the same classes")


def find_saliency(saliency_dir: Path, names: set[str], image: Path) -> Path | None:
    """The image's map among `names` (the class folder's file names), under either naming style."""
    for suffix in SALIENCY_SUFFIXES:
        if image.stem + suffix in names:
            return saliency_dir / (image.stem + suffix)
    return None


def match_saliency(saliency_split_dir: Path, images: list[tuple[Path, int]]) -> list[Path]:
    """One map per image, found up front (one directory listing per class), or DataError listing the gaps."""
    listings: dict[str, set[str]] = {}
    maps, missing = [], []
    for path, _ in images:
        cls = path.parent.name
        if cls not in listings:
            folder = saliency_split_dir / cls
            listings[cls] = {e.name for e in os.scandir(folder)} if folder.is_dir() else set()
        found = find_saliency(saliency_split_dir / cls, listings[cls], path)
        if found is None:
            missing.append(saliency_split_dir / cls / f"{path.stem}_sal.npy")
        maps.append(found)
    if missing:
        raise DataError(f"{len(missing)} of {len(images)} images have no saliency map, e.g. {missing[0]} "
                        f"(or {missing[0].name.replace('_sal', '-sal')}); extract the missing maps or leave "
                        "saliency_root unset")
    return maps


def resized_size(width: int, height: int, shorter: int) -> tuple[int, int]:
    """(width, height) with the shorter side `shorter`, torchvision's Resize(int) rounding."""
    if width <= height:
        return shorter, int(shorter * height / width)
    return int(shorter * width / height), shorter


def load_image(path: Path, image_size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """(RGB uint8 image with shorter side image_size, native (height, width))."""
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            native = (image.height, image.width)
            resized = image.resize(resized_size(image.width, image.height, image_size), Image.BILINEAR)
    except OSError as err:
        raise DataError(f"cannot read image {path}: {err}; replace or delete the file") from None
    return np.asarray(resized), native


def load_saliency(path: Path, native: tuple[int, int], size: tuple[int, int], image: Path) -> np.ndarray:
    """The map resampled to `size` (height, width) as a float16 density summing to 1.

    Stored at 1/SALIENCY_STRIDE of that size as a 16-bit PNG (`encode_density_png`): full-size
    float16 maps would outweigh the JPEGs many times over (~170 GB for the train split) and sit in
    float16's subnormal range; fixation densities are smooth, and the loader resizes them back."""
    try:
        density = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read saliency map {path}: {err}; re-extract it") from None
    density = np.squeeze(density)
    if density.shape != native or not np.issubdtype(density.dtype, np.floating):
        raise DataError(f"saliency map {path} is {density.dtype} {density.shape}, but image {image} is {native} "
                        "(height, width); re-extract the map at the image's native resolution")
    density16(density, str(path))  # refuses NaN, negative or empty maps before resampling
    plane = Image.fromarray(density.astype(np.float32)).resize(size[::-1], Image.BILINEAR)
    return density16(np.maximum(np.asarray(plane), 0.0), str(path))


def dataset_info(classes: list[str], image_size: int, saliency: bool) -> dict:
    return {"num_classes": len(classes), "class_names": list(classes), "channels": 3, "height": image_size,
            "width": image_size, "mean": list(MEAN), "std": list(STD), "saliency": saliency,
            "resize": f"shorter side {image_size}; height/width give that side, the longer side varies"}


def read_split(root: str | os.PathLike, split: str, *, saliency_root: str | os.PathLike | None = None,
               image_size: int = 224) -> SourceSplit:
    """ImageNet `split` ("train" or "val") from class folders, stored at shorter side `image_size`."""
    if split not in SPLITS:
        raise DataError(f"unknown ImageNet split {split!r}; use one of {list(SPLITS)}")
    if image_size < 1:
        raise DataError(f"image_size must be positive, got {image_size}")
    root = Path(root).expanduser()
    split_dir = root / split
    if not split_dir.is_dir():
        raise DataError(f"ImageNet split folder {split_dir} does not exist; point root at the folder holding "
                        "train/ and val/, each with one folder per class")
    classes = class_folders(split_dir)
    if not classes:
        raise DataError(f"{split_dir} has no class folders; sort its images into <class>/ folders "
                        "(for val, e.g. with valprep.sh)")
    check_classes(root, split, classes)
    images = list_images(split_dir, classes)
    if not images:
        raise DataError(f"the class folders of {split_dir} hold no .JPEG/.jpg/.png images")
    maps = None
    if saliency_root is not None:
        saliency_split_dir = Path(saliency_root).expanduser() / split
        if not saliency_split_dir.is_dir():
            raise DataError(f"saliency folder {saliency_split_dir} does not exist; pass the folder holding "
                            f"{split}/<class>/<id>_sal.npy as saliency_root, or leave it unset")
        maps = match_saliency(saliency_split_dir, images)

    def samples() -> Iterator[dict[str, bytes]]:
        for i, (path, label) in enumerate(images):
            pixels, native = load_image(path, image_size)
            sample = {"image.jpg": encode_jpeg(pixels, quality=JPEG_QUALITY), "label.cls": encode_label(label)}
            if maps is not None:
                small = tuple(-(-side // SALIENCY_STRIDE) for side in pixels.shape[:2])
                sample["saliency.png"] = encode_density_png(load_saliency(maps[i], native, small, path))
            yield sample

    fields = {"image.jpg": f"RGB JPEG (quality {JPEG_QUALITY}), shorter side {image_size}",
              "label.cls": "class index, position of the class folder in sorted order"}
    if maps is not None:
        fields["saliency.png"] = (f"fixation density at 1/{SALIENCY_STRIDE} of the image's size, 16-bit PNG "
                                  "scaled to its maximum (relative density)")
    return SourceSplit(samples=samples(), num_samples=len(images), fields=fields,
                       dataset_info=dataset_info(classes, image_size, maps is not None))
