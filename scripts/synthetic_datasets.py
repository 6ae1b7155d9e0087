"""Small synthetic sets in each paper dataset's real on-disk format, for the data benchmarks.

Why synthetic: the benchmarks time reading, decoding and rendering, which depend on the formats, sizes and
how compressible the images are, not on what they show. Images are smooth colour fields with mild noise, so
that PNG/JPEG sizes and decode times resemble photographs' rather than pure noise's or flat colours'.
The formats are those the sources read (tests/helpers/raw_datasets.py and the source tests write the same by hand):

* CIFAR-100: `cifar-100-python/{meta,train,test}` pickles, `data` uint8 (N, 3072) R, G, B planes.
* Tiny-ImageNet: `tiny-imagenet-200/` wnids.txt, words.txt, train/<wnid>/images/*.JPEG, val/images + annotations.
* STL-10 + saliency: `stl10_binary/unlabeled_X.bin` (column-major 96x96 planes), `salmap/unlabeled/
  saliency_unlabeled.npy` float32 (N, 1, 96, 96) densities.
* 3DIEBench: SIE's `<synset>/<object>/image_k.jpg` + `latent_k.npy` (50 views of 256 px), train index files.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image

RENDER_SIDE, VIEWS_PER_OBJECT = 256, 50


def natural_images(n: int, side: int, rng: np.random.Generator, noise: float = 6.0) -> np.ndarray:
    """(n, side, side, 3) uint8: a few random sinusoids per channel plus Gaussian noise (photographs; renders of
    objects on a plain background are cleaner: noise 0)."""
    y, x = np.mgrid[0:side, 0:side] / side
    out = np.empty((n, side, side, 3), np.uint8)
    for i in range(n):
        a, b, c = rng.uniform(2, 12, 3)
        phase = rng.uniform(0, 2 * np.pi, 3)
        field = np.stack([np.sin(a * x + b * y + phase[0]), np.cos(b * x - c * y + phase[1]),
                          np.sin(c * (x + y) + phase[2])], -1)
        out[i] = np.clip((field + 1) * 127.5 + rng.normal(0, noise, field.shape), 0, 255)
    return out


def write_cifar100(root: Path, n: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": [f"class{i:03d}" for i in range(100)],
                                                "coarse_label_names": [f"super{i}" for i in range(20)]}))
    for name, count in (("train", n), ("test", 100)):
        images = natural_images(count, 32, rng)
        (folder / name).write_bytes(pickle.dumps({
            "data": images.transpose(0, 3, 1, 2).reshape(count, -1), "fine_labels": list(rng.integers(0, 100, count)),
            "coarse_labels": [0] * count, "filenames": [f"{name}_{i}.png" for i in range(count)]}))
    return folder


def write_tinyimagenet(root: Path, n: int, classes: int = 10, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder = root / "tiny-imagenet-200"
    wnids = [f"n{i:08d}" for i in range(classes)]
    (folder / "val" / "images").mkdir(parents=True)
    (folder / "wnids.txt").write_text("".join(f"{w}\n" for w in wnids))
    (folder / "words.txt").write_text("".join(f"{w}\tthing {i}\n" for i, w in enumerate(wnids)))
    for k, image in enumerate(natural_images(n, 64, rng)):
        wnid = wnids[k % classes]
        images = folder / "train" / wnid / "images"
        images.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(images / f"{wnid}_{k}.JPEG", quality=90)
    annotations = []
    for k, image in enumerate(natural_images(classes, 64, rng)):
        Image.fromarray(image).save(folder / "val" / "images" / f"val_{k}.JPEG", quality=90)
        annotations.append(f"val_{k}.JPEG\t{wnids[k]}\t0\t0\t63\t63\n")
    (folder / "val" / "val_annotations.txt").write_text("".join(annotations))
    return folder


def write_stl10(root: Path, n: int, seed: int = 0) -> tuple[Path, Path]:
    """(stl10_binary folder, saliency root) with an `unlabeled` split of n images and their maps."""
    rng = np.random.default_rng(seed)
    folder, saliency = root / "stl10_binary", root / "salmap"
    folder.mkdir(parents=True)
    images = natural_images(n, 96, rng)
    (folder / "unlabeled_X.bin").write_bytes(np.ascontiguousarray(images.transpose(0, 3, 2, 1)).tobytes())
    y, x = np.mgrid[0:96, 0:96]
    centres = rng.uniform(20, 76, (n, 2))
    maps = np.exp(-((y - centres[:, :1, None]) ** 2 + (x - centres[:, 1:, None]) ** 2) / (2 * 12.0 ** 2)) + 1e-3
    maps = (maps / maps.sum(axis=(1, 2), keepdims=True)).astype(np.float32)[:, None]
    (saliency / "unlabeled").mkdir(parents=True)
    np.save(saliency / "unlabeled" / "saliency_unlabeled.npy", maps)
    return folder, saliency


def write_3diebench(root: Path, objects: int, seed: int = 0, split: str = "train") -> Path:
    """SIE's layout: <synset>/<object>/image_k.jpg + latent_k.npy, and the split's index files."""
    rng = np.random.default_rng(seed)
    names = []
    for i in range(objects):
        folder = root / f"{i % 5:08d}" / f"object{i:05d}"
        folder.mkdir(parents=True)
        names.append(f"/{i % 5:08d}/object{i:05d}/")
        for k, image in enumerate(natural_images(VIEWS_PER_OBJECT, RENDER_SIDE, rng, noise=0.0)):
            Image.fromarray(image).save(folder / f"image_{k}.jpg", quality=90)
            latents = np.concatenate([rng.uniform(-np.pi / 2, np.pi / 2, 3), rng.uniform(0, 1, 4)])
            np.save(folder / f"latent_{k}.npy", latents)
    np.save(root / f"{split}_images.npy", np.array(names))
    np.save(root / f"{split}_labels.npy", np.arange(objects) % 5)
    return root
