"""Tiny-ImageNet as a source: the `tiny-imagenet-200/` folder -> PNG + label samples.

The published layout (http://cs231n.stanford.edu/tiny-imagenet-200.zip):

    wnids.txt                          the 200 class wnids, one per line
    words.txt                          wnid <TAB> comma-separated names (all of WordNet)
    train/<wnid>/images/*.JPEG         500 images per class
    val/images/*.JPEG                  10,000 images
    val/val_annotations.txt            file name <TAB> wnid <TAB> bounding box ...

Images are 64x64 JPEG, a few of them grayscale (converted to RGB here). The class index is the
position of the wnid in the *sorted* wnid list, so train and val agree whatever order the files
or folders come in (docs/paper-and-original-code.md#c4-unsorted-imagenet-classes). Samples come out in a seeded
permutation of the sorted file list by default, because the train folders are grouped by class and a streaming shuffle
buffer would otherwise see one or two classes at a time.

Load time is the shared `augmented.AugmentationComposer`
(docs/paper-and-original-code.md#augmentation-actions, #tiny-imagenet-dataset).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from data_pipeline.errors import DataError
from data_pipeline.sources.base import RAW_IMAGE, RAW_IMAGE_WHY, SourceSplit, encode_label, encode_npy

FOLDER = "tiny-imagenet-200"
SPLITS = ("train", "val")
SIDE = 64
MEAN = [0.4802, 0.4481, 0.3975]  # the original's Normalize values
# (docs/paper-and-original-code.md#tiny-imagenet-dataset), on [0, 1] intensities
STD = [0.2302, 0.2265, 0.2262]
IMAGE_SUFFIXES = (".jpeg", ".jpg")
FIX_HINT = ("point the source at the extracted tiny-imagenet-200 folder (or its parent), from "
            "http://cs231n.stanford.edu/tiny-imagenet-200.zip")


def find_root(root: str | Path) -> Path:
    """The folder holding wnids.txt: `root` itself or `root/tiny-imagenet-200`."""
    root = Path(root).expanduser()
    if not (root / "wnids.txt").exists() and (root / FOLDER).is_dir():
        root = root / FOLDER
    if not root.is_dir():
        raise DataError(f"Tiny-ImageNet folder {root} does not exist; {FIX_HINT}")
    return root


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"Tiny-ImageNet file {path} does not exist; {FIX_HINT}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read Tiny-ImageNet file {path}: {err}; re-extract it; {FIX_HINT}") from None


def read_wnids(root: Path) -> list[str]:
    """The class wnids, sorted: the label of a wnid is its index here."""
    path = root / "wnids.txt"
    wnids = [line.strip() for line in _read_lines(path) if line.strip()]
    if not wnids:
        raise DataError(f"Tiny-ImageNet file {path} lists no wnids; {FIX_HINT}")
    duplicates = sorted(w for w, n in Counter(wnids).items() if n > 1)
    if duplicates:
        raise DataError(f"Tiny-ImageNet file {path} lists {', '.join(duplicates)} more than once; {FIX_HINT}")
    return sorted(wnids)


def read_class_names(root: Path, wnids: list[str]) -> list[str]:
    """The first name words.txt gives each wnid ("goldfish, Carassius auratus" -> "goldfish")."""
    path = root / "words.txt"
    names = {}
    for line in _read_lines(path):
        wnid, _, words = line.partition("\t")
        names[wnid.strip()] = words.split(",")[0].strip()
    missing = [w for w in wnids if not names.get(w)]
    if missing:
        raise DataError(f"Tiny-ImageNet file {path} has no name for {len(missing)} wnid(s) of wnids.txt "
                        f"({', '.join(missing[:3])}...); {FIX_HINT}")
    return [names[w] for w in wnids]


def _images_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DataError(f"Tiny-ImageNet folder {folder} does not exist; {FIX_HINT}")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def list_train(root: Path, wnids: list[str]) -> list[tuple[Path, int]]:
    """(image path, label) of train/<wnid>/images/*.JPEG, classes in sorted-wnid order."""
    items = []
    for label, wnid in enumerate(wnids):
        paths = _images_in(root / "train" / wnid / "images")
        if not paths:
            raise DataError(f"Tiny-ImageNet folder {root / 'train' / wnid / 'images'} holds no JPEG; {FIX_HINT}")
        items += [(path, label) for path in paths]
    return items


def list_val(root: Path, wnids: list[str]) -> list[tuple[Path, int]]:
    """(image path, label) of val/images/*, labels from val/val_annotations.txt."""
    path = root / "val" / "val_annotations.txt"
    index = {wnid: label for label, wnid in enumerate(wnids)}
    items = []
    for number, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 2 or parts[1].strip() not in index:
            raise DataError(f"{path} line {number} is not 'file name <TAB> wnid ...' with a wnid of wnids.txt: "
                            f"{line[:80]!r}; {FIX_HINT}")
        items.append((root / "val" / "images" / parts[0].strip(), index[parts[1].strip()]))
    if not items:
        raise DataError(f"Tiny-ImageNet file {path} annotates no images; {FIX_HINT}")
    missing = [p for p, _ in items if not p.is_file()]
    if missing:
        raise DataError(f"{len(missing)} image(s) named in {path} do not exist, e.g. {missing[0]}; {FIX_HINT}")
    return sorted(items)


def load_image(path: Path) -> np.ndarray:
    """One image file -> uint8 (64, 64, 3); grayscale (and any other mode) converted to RGB."""
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
    except FileNotFoundError:
        raise DataError(f"Tiny-ImageNet image {path} does not exist; {FIX_HINT}") from None
    except Exception as err:  # noqa: BLE001 - PIL raises several kinds on truncated or non-image files
        raise DataError(f"cannot decode Tiny-ImageNet image {path} ({err}); re-extract it; {FIX_HINT}") from None
    if image.size != (SIDE, SIDE):
        raise DataError(f"Tiny-ImageNet image {path} is {image.size[0]}x{image.size[1]}, expected {SIDE}x{SIDE}; "
                        f"{FIX_HINT}")
    return np.asarray(image)


def dataset_info(class_names: list[str]) -> dict:
    return {"num_classes": len(class_names), "class_names": list(class_names), "channels": 3,
            "height": SIDE, "width": SIDE, "mean": list(MEAN), "std": list(STD)}


def read_split(root: str | Path, split: str, *, order_seed: int | None = 0) -> SourceSplit:
    """Tiny-ImageNet "train" (100,000) or "val" (10,000) as `image.npy` + `label.cls` samples.

    order_seed: samples come in this seeded permutation of the sorted file list (None: sorted).
    """
    if split not in SPLITS:
        raise DataError(f"Tiny-ImageNet has splits {', '.join(SPLITS)}, not {split!r}")
    root = find_root(root)
    wnids = read_wnids(root)
    class_names = read_class_names(root, wnids)
    items = list_train(root, wnids) if split == "train" else list_val(root, wnids)
    if order_seed is not None:
        items = [items[i] for i in np.random.default_rng(order_seed).permutation(len(items))]
    fields = {RAW_IMAGE: f"uint8 RGB {SIDE}x{SIDE}x3, the decoded JPEG, {RAW_IMAGE_WHY}",
              "label.cls": f"class index 0..{len(wnids) - 1} (position in the sorted wnids), ASCII decimal"}

    def samples():
        for path, label in items:
            yield {RAW_IMAGE: encode_npy(np.ascontiguousarray(load_image(path))), "label.cls": encode_label(label)}

    return SourceSplit(samples=samples(), num_samples=len(items), fields=fields,
                       dataset_info=dataset_info(class_names))
