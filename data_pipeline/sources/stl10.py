"""STL-10 for PLS (docs/paper-and-original-code.md#stl-10-glimpses): the binary release (+ the released saliency
maps) -> shard samples.

The binary release (`stl10_binary/`): `<split>_X.bin` is uint8 N x 3 x 96 x 96 with every channel
plane stored column-major (MATLAB order), so a plane read row-major is the transposed image;
`<split>_y.bin` holds uint8 labels 1..10 (stored here as 0..9); `unlabeled` has no labels (stored
as -1); `class_names.txt` has one name per line. Files are memory-mapped: `unlabeled_X.bin` is 2.8 GB.

Saliency (optional here, needed for saliency-guided glimpses): the released DeepGaze maps (HF
dataset Hafez/salmap-stl10), `<saliency_root>/<name>/saliency_<name>.npy`, float (N, 1, 96, 96),
each summing to 1, computed on the upright images; <name> is the original's split name ("test" for
our "val").

Fields per sample:
    image.npy     96 x 96 RGB uint8, upright (raw: decoding it is a header read)
    saliency.npy  96 x 96 float16 density renormalised to sum 1 (only with saliency_root)
    label.cls     0..9, or -1 in the unlabeled split
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import numpy as np

from data_pipeline.errors import DataError
from data_pipeline.sources.base import RAW_IMAGE, RAW_IMAGE_WHY, SourceSplit, encode_label, encode_npy

SIZE = 96
PIXELS = 3 * SIZE * SIZE  # bytes per image
MEAN = [0.4467, 0.4398, 0.4066]  # the original's normalisation (docs/paper-and-original-code.md#stl-10-glimpses)
STD = [0.2241, 0.2215, 0.2239]
CLASS_NAMES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
UNLABELED = -1
# our split -> the release's file prefix (images, labels, saliency maps)
SPLIT_NAMES = {"train": "train", "unlabeled": "unlabeled", "val": "test"}
FIX_HINT = "point it at the stl10_binary folder of the binary release (stl10_binary.tar.gz)"


def find_binary_dir(root: str | os.PathLike) -> Path:
    """`root` itself or its `stl10_binary` subfolder, whichever holds the .bin files."""
    root = Path(root).expanduser()
    for folder in (root, root / "stl10_binary"):
        if any(folder.glob("*_X.bin")):
            return folder
    raise DataError(f"STL-10 folder {root} has no *_X.bin files (nor has {root / 'stl10_binary'}); {FIX_HINT}")


def read_images(path: Path) -> np.ndarray:
    """A `*_X.bin` file as uint8 (N, 96, 96, 3) upright images (a memory-mapped view, no copy)."""
    if not path.is_file():
        raise DataError(f"STL-10 image file {path} does not exist; {FIX_HINT}")
    size = path.stat().st_size
    if size == 0 or size % PIXELS:
        raise DataError(f"{path} has {size} bytes, not a multiple of {PIXELS} (3 x 96 x 96); the file is "
                        "truncated or corrupt, download and unpack it again")
    planes = np.memmap(path, dtype=np.uint8, mode="r", shape=(size // PIXELS, 3, SIZE, SIZE))
    return planes.transpose(0, 3, 2, 1)  # (N, C, col, row) -> (N, row, col, C): the column-major fix


def read_labels(path: Path, count: int) -> np.ndarray:
    """A `*_y.bin` file (uint8 1..10) as int64 0..9."""
    if not path.is_file():
        raise DataError(f"STL-10 label file {path} does not exist; {FIX_HINT}")
    labels = np.fromfile(path, dtype=np.uint8)
    if len(labels) != count:
        raise DataError(f"{path} holds {len(labels)} labels for {count} images; download and unpack it again")
    if len(labels) and not 1 <= labels.min() <= labels.max() <= len(CLASS_NAMES):
        raise DataError(f"{path} has labels outside 1..{len(CLASS_NAMES)}; it is not an STL-10 label file")
    return labels.astype(np.int64) - 1


def read_class_names(folder: Path) -> list[str]:
    """`class_names.txt`, or the release's names when the file is absent."""
    path = folder / "class_names.txt"
    if not path.is_file():
        return list(CLASS_NAMES)
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if len(names) != len(CLASS_NAMES):
        raise DataError(f"{path} lists {len(names)} class names, STL-10 has {len(CLASS_NAMES)}; "
                        "restore the file from the release or delete it")
    return names


def saliency_path(saliency_root: str | os.PathLike, split: str) -> Path:
    name = SPLIT_NAMES[split]
    return Path(saliency_root).expanduser() / name / f"saliency_{name}.npy"


def read_saliency(saliency_root: str | os.PathLike, split: str, count: int) -> np.ndarray:
    """The split's released maps, memory-mapped, as (N, 96, 96); shape and count checked."""
    path = saliency_path(saliency_root, split)
    if not path.is_file():
        raise DataError(f"saliency file {path} does not exist; download Hafez/salmap-stl10 and pass its "
                        "folder (holding train/, test/, unlabeled/) as saliency_root, or leave saliency_root unset")
    try:
        maps = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read saliency file {path}: {err}; download it again") from None
    if maps.ndim == 4 and maps.shape[1] == 1:
        maps = maps[:, 0]
    if maps.ndim != 3 or maps.shape[1:] != (SIZE, SIZE) or not np.issubdtype(maps.dtype, np.floating):
        raise DataError(f"saliency file {path} holds {maps.dtype} {maps.shape}, expected float (N, 1, 96, 96); "
                        "use the released maps for this split")
    if len(maps) != count:
        raise DataError(f"saliency file {path} has {len(maps)} maps for {count} images of split {split!r}; "
                        "the maps belong to another split or release, use the matching saliency_<split>.npy")
    return maps


def density16(density: np.ndarray, where: str) -> np.ndarray:
    """A saliency map renormalised to sum 1, as float16; DataError if it is not a density."""
    density = np.asarray(density, dtype=np.float64)
    total = density.sum()
    if not np.isfinite(density).all() or density.min() < 0 or total <= 0:
        raise DataError(f"saliency map {where} has non-finite or negative values or sums to 0; "
                        "re-download or re-extract it")
    return (density / total).astype(np.float16)


def dataset_info(class_names: list[str] | None = None, saliency: bool = False, split: str = "train") -> dict:
    info = {"num_classes": len(CLASS_NAMES), "class_names": list(class_names or CLASS_NAMES), "channels": 3,
            "height": SIZE, "width": SIZE, "mean": list(MEAN), "std": list(STD), "saliency": saliency,
            "labelled": split != "unlabeled"}
    if split == "unlabeled":
        info["label_note"] = f"the unlabeled split has no labels: every label.cls is {UNLABELED}"
    return info


def read_split(root: str | os.PathLike, split: str, *, saliency_root: str | os.PathLike | None = None
               ) -> SourceSplit:
    """STL-10 `split` ("train": 5,000 labelled, "unlabeled": 100,000, "val": the 8,000 test images)."""
    if split not in SPLIT_NAMES:
        raise DataError(f"unknown STL-10 split {split!r}; use one of {sorted(SPLIT_NAMES)} ('val' is the test set)")
    folder = find_binary_dir(root)
    name = SPLIT_NAMES[split]
    image_path = folder / f"{name}_X.bin"
    images = read_images(image_path)
    labels = (np.full(len(images), UNLABELED, dtype=np.int64) if split == "unlabeled"
              else read_labels(folder / f"{name}_y.bin", len(images)))
    maps = read_saliency(saliency_root, split, len(images)) if saliency_root is not None else None
    map_path = saliency_path(saliency_root, split) if maps is not None else None

    def samples() -> Iterator[dict[str, bytes]]:
        for i in range(len(images)):
            sample = {RAW_IMAGE: encode_npy(np.ascontiguousarray(images[i])), "label.cls": encode_label(labels[i])}
            if maps is not None:
                sample["saliency.npy"] = encode_npy(density16(maps[i], f"{i} of {map_path}"))
            yield sample

    fields = {RAW_IMAGE: f"96x96x3 RGB uint8, upright, {RAW_IMAGE_WHY}",
              "label.cls": "class index 0..9 (the release's 1..10 minus 1), -1 in the unlabeled split"}
    if maps is not None:
        fields["saliency.npy"] = "96x96 float16 fixation density summing to 1 (released DeepGaze IIE map)"
    return SourceSplit(samples=samples(), num_samples=len(images), fields=fields,
                       dataset_info=dataset_info(read_class_names(folder), maps is not None, split))
