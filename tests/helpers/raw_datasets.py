"""Raw datasets written by hand in their real on-disk formats, small and with known content: what the sources read
(`python -m data_pipeline write`). The source tests (tests/unit/data_pipeline/test_source_*.py) and the end-to-end
dataset tests share them."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image

from data_pipeline.sources import fashion_mnist as fm
from data_pipeline.sources import stl10
from data_pipeline.sources.base import encode_jpeg

# ---------------------------------------------------------------- Fashion-MNIST (and MNIST): IDX files

def write_idx(path: Path, array: np.ndarray, gz: bool) -> Path:
    """The IDX format by hand: 0, 0, type code 0x08 (uint8), ndim, big-endian uint32 dims, data."""
    data = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data += array.astype(np.uint8).tobytes()
    path = path.with_name(path.name + ".gz") if gz else path
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def make_raw_dir(folder: Path, n_train=30, n_val=12, gz=True) -> Path:
    """A folder with the four Fashion-MNIST IDX files (random content, real format)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_val)):
        images, labels = fm.SPLIT_FILES[split]
        write_idx(folder / images, rng.integers(0, 256, (n, 28, 28)), gz)
        write_idx(folder / labels, np.arange(n) % 10, gz)
    return folder


# ---------------------------------------------------------------- STL-10 binary and ImageNet folders (PLS)

STL10_SIDE = 96


def stl10_images(n: int, seed: int = 0) -> np.ndarray:
    """(n, 96, 96, 3) uint8: dim noise, a white top-left pixel, a red pixel at (3, 70) (off the diagonal)."""
    images = np.random.default_rng(seed).integers(0, 50, (n, STL10_SIDE, STL10_SIDE, 3), dtype=np.uint8)
    images[:, 0, 0] = 255
    images[:, 3, 70] = (255, 0, 0)
    return images


def write_bin_images(path, images: np.ndarray) -> None:
    """STL-10's layout: per image, per channel, the 96x96 plane in column-major order."""
    path.write_bytes(np.ascontiguousarray(images.transpose(0, 3, 2, 1)).tobytes())


def write_stl10(folder, n_train=4, n_test=3, n_unlabeled=5):
    """A `stl10_binary` folder; labels 1..10 cycling, so train labels are 1, 2, 3, 4."""
    folder.mkdir(parents=True)
    images = {}
    for name, n in (("train", n_train), ("test", n_test), ("unlabeled", n_unlabeled)):
        images[name] = stl10_images(n, seed=len(name))
        write_bin_images(folder / f"{name}_X.bin", images[name])
        if name != "unlabeled":
            (folder / f"{name}_y.bin").write_bytes((np.arange(n) % 10 + 1).astype(np.uint8).tobytes())
    (folder / "class_names.txt").write_text("\n".join(stl10.CLASS_NAMES) + "\n")
    return images


def write_imagenet(root, sizes=((40, 60), (50, 30)), classes=("n02", "n01", "n03"), splits=("train", "val")):
    """`<root>/<split>/<class>/<id>.JPEG` and maps `<root>_sal/<split>/<class>/<id>{_sal,-sal}.npy`.

    Each image is grey with a red square; its map peaks on the square. Class n01 uses `-sal.npy`
    (the extraction script's name), the others `_sal.npy` (the original loader's).
    """
    sal_root = root.parent / (root.name + "_sal")
    for split in splits:
        for cls in classes:
            (root / split / cls).mkdir(parents=True)
            (sal_root / split / cls).mkdir(parents=True)
            for k, (h, w) in enumerate(sizes):
                image = np.full((h, w, 3), 128, dtype=np.uint8)
                image[h // 4:h // 4 + 6, w // 4:w // 4 + 6] = (255, 0, 0)
                Image.fromarray(image).save(root / split / cls / f"{cls}_{k}.JPEG", quality=95)
                density = np.full((h, w), 1e-3)
                density[h // 4:h // 4 + 6, w // 4:w // 4 + 6] = 1.0
                suffix = "-sal.npy" if cls == "n01" else "_sal.npy"
                np.save(sal_root / split / cls / f"{cls}_{k}{suffix}", (density / density.sum()).astype(np.float32))
    return sal_root


# ---------------------------------------------------------------- CIFAR-100: pickled batches

class Py2Pickler(pickle._Pickler):
    """Writes str and bytes as Python 2 `str` (BINSTRING), like the cPickle that wrote the CIFAR files."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj):
        data = obj if isinstance(obj, bytes) else obj.encode("latin1")
        self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str


def dump(obj, path: Path, py2: bool) -> None:
    """Pickle `obj` to `path` as the published CIFAR files are (Python 2's cPickle) or as Python 3 does."""
    if py2:  # numpy 1 / Python 2 module path, as in the published files
        buffer = io.BytesIO()
        Py2Pickler(buffer, protocol=2).dump(obj)
        path.write_bytes(buffer.getvalue().replace(b"numpy._core.", b"numpy.core."))
    else:
        path.write_bytes(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def cifar_rows(images: np.ndarray) -> np.ndarray:
    """(N, 32, 32, 3) -> the published (N, 3072) layout: the R plane, then G, then B, each row-major."""
    return images.transpose(0, 3, 1, 2).reshape(len(images), -1)


# ---------------------------------------------------------------- Tiny-ImageNet folders

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)
# wnids.txt lists them unsorted; sorted, n01 -> 0 (red), n02 -> 1 (green), n03 -> 2 (blue)
WNID_COLORS = {"n03000003": BLUE, "n01000001": RED, "n02000002": GREEN}
TINYIMAGENET_VAL = [("val_0.JPEG", "n03000003"), ("val_1.JPEG", "n01000001"), ("val_2.JPEG", "n02000002"),
                    ("val_3.JPEG", "n01000001")]  # val_3 is grayscale


def flat(color, size=64) -> np.ndarray:
    """A (size, size, 3) uint8 image of one colour."""
    return np.broadcast_to(np.array(color, np.uint8), (size, size, 3)).copy()


def write_tinyimagenet(parent: Path) -> Path:
    """`<parent>/tiny-imagenet-200`: 3 classes of 2 flat-coloured train images each (`WNID_COLORS`), 4 val images
    (`TINYIMAGENET_VAL`, the last grayscale), wnids.txt, words.txt and val_annotations.txt."""
    root = parent / "tiny-imagenet-200"
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("".join(f"{w}\n" for w in WNID_COLORS))
    (root / "words.txt").write_text("n00000000\tentity\n" + "".join(
        f"{w}\t{name}, alias {i}\n" for i, (w, name) in enumerate(
            [("n01000001", "red thing"), ("n02000002", "green thing"), ("n03000003", "blue thing")])))
    for wnid, color in WNID_COLORS.items():
        images = root / "train" / wnid / "images"
        images.mkdir(parents=True)
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
        for k in range(2):
            (images / f"{wnid}_{k}.JPEG").write_bytes(encode_jpeg(flat(color)))
    for name, wnid in TINYIMAGENET_VAL[:3]:
        (root / "val" / "images" / name).write_bytes(encode_jpeg(flat(WNID_COLORS[wnid])))
    gray = Image.fromarray(np.full((64, 64), 128, np.uint8), mode="L")
    gray.save(root / "val" / "images" / TINYIMAGENET_VAL[3][0], "JPEG")
    (root / "val" / "val_annotations.txt").write_text(
        "".join(f"{name}\t{wnid}\t0\t0\t63\t63\n" for name, wnid in TINYIMAGENET_VAL))
    return root


# ---------------------------------------------------------------- 3DIEBench: one folder of views and latents per object

SYNSETS = ("02691156", "04379243")  # label 0, label 1 (sorted synset order, as in the real index)
THREEDIE_SIDE = 20  # the side of every rendered view


def view_colour(object_index: int, k: int) -> tuple[int, int, int]:
    """A flat colour naming (object, view), far enough apart to survive JPEG and resizing."""
    return 30 + 40 * k, 40 * object_index, 128


def random_latents(rng: np.random.Generator, n: int, ood: bool = False) -> np.ndarray:
    """Latents in the generators' ranges: Euler angles U(-pi/2, pi/2) (OOD: +-U(pi/2, pi)), hues U(0, 1),
    spot theta U(0, pi/4), phi U(0, 2 pi)."""
    if ood:
        angles = rng.choice([-1.0, 1.0], (n, 3)) * rng.uniform(np.pi / 2, np.pi, (n, 3))
    else:
        angles = rng.uniform(-np.pi / 2, np.pi / 2, (n, 3))
    rest = np.stack([rng.uniform(0, 1, n), rng.uniform(0, np.pi / 4, n), rng.uniform(0, 2 * np.pi, n),
                     rng.uniform(0, 1, n)], axis=1)
    return np.concatenate([angles, rest], axis=1)


def write_object(folder: Path, object_index: int, views, rng, ood=False) -> dict[int, np.ndarray]:
    """One object's folder: `image_<k>.jpg` (flat `view_colour(object_index, k)`) and `latent_<k>.npy` for each view
    k in `views`; returns the latents by view."""
    folder.mkdir(parents=True, exist_ok=True)
    latents = {}
    for k, latent in zip(views, random_latents(rng, len(views), ood)):
        image = np.full((THREEDIE_SIDE, THREEDIE_SIDE, 3), view_colour(object_index, k), np.uint8)
        Image.fromarray(image).save(folder / f"image_{k}.jpg", quality=95)
        np.save(folder / f"latent_{k}.npy", latent)  # float64, as the generators write them
        latents[k] = latent
    return latents
