"""CIFAR-100 as a source: the python-pickle batches of `cifar-100-python/` -> PNG + label samples.

The published format (https://www.cs.toronto.edu/~kriz/cifar.html): `train` and `test` are pickled
dicts with `data`, uint8 (N, 3072) where each row is the 1024 red, then 1024 green, then 1024 blue
values of a 32x32 image in row-major order, and `fine_labels`, N ints in 0..99; `meta` holds
`fine_label_names`. The files were written by Python 2, so they load with encoding="latin1".
Split "val" is the test set: the paper validates on it (docs/paper-and-original-code.md#cifar-100-dataset).

Load time is the shared `augmented.AugmentationComposer`
(docs/paper-and-original-code.md#augmentation-actions, #cifar-100-dataset).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from data_pipeline.errors import DataError
from data_pipeline.sources.base import RAW_IMAGE, RAW_IMAGE_WHY, SourceSplit, encode_label, encode_npy

FOLDER = "cifar-100-python"
SPLIT_FILES = {"train": "train", "val": "test"}
SIDE = 32
NUM_CLASSES = 100
MEAN = [0.5071, 0.4867, 0.4408]  # the original's Normalize values (docs/paper-and-original-code.md#cifar-100-dataset),
# on [0, 1] intensities
STD = [0.2675, 0.2565, 0.2761]
FIELDS = {RAW_IMAGE: f"uint8 RGB {SIDE}x{SIDE}x3, {RAW_IMAGE_WHY}",
          "label.cls": f"fine class index 0..{NUM_CLASSES - 1}, ASCII decimal"}
FIX_HINT = ("point the source at the extracted cifar-100-python folder (or its parent), from "
            "cifar-100-python.tar.gz at https://www.cs.toronto.edu/~kriz/cifar.html")


# ---------------------------------------------------------------- safe unpickling

# Security: the CIFAR files are pickles, and a pickle can call any importable function while it loads
# (`os.system` included). We never use pickle.load on them; this unpickler resolves only the globals
# a dict of lists, strings and numpy arrays needs, and refuses every other global. The objects come
# from numpy itself rather than from an import of the named module.
_SAFE_GLOBALS = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    # ndarray.__reduce__ (protocol <= 4) and numpy scalars; numpy 1 wrote `numpy.core`, numpy 2 `numpy._core`
    **{(f"{core}.multiarray", "_reconstruct"): np.zeros(1).__reduce__()[0] for core in ("numpy.core", "numpy._core")},
    **{(f"{core}.multiarray", "scalar"): np.uint8(0).__reduce__()[0] for core in ("numpy.core", "numpy._core")},
    # ndarray.__reduce_ex__(5): frombuffer(buffer, dtype).reshape(shape)
    **{(f"{core}.numeric", "_frombuffer"): np.zeros(1).__reduce_ex__(5)[0] for core in ("numpy.core", "numpy._core")},
    # protocol-2 pickles from Python 3 spell bytes as _codecs.encode(str, "latin1")
    ("_codecs", "encode"): lambda text, encoding="utf-8", errors="strict": _latin1_bytes(text, encoding),
}


def _latin1_bytes(text: str, encoding: str) -> bytes:
    if encoding != "latin1" or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode is allowed only for latin1 text, got {encoding!r}")
    return text.encode("latin1")


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler that allows plain containers, numpy arrays/dtypes/scalars and nothing else."""

    def find_class(self, module: str, name: str):
        try:
            return _SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a dataset pickle") from None


def load_pickle(path: Path) -> dict:
    """A CIFAR pickle as a dict with str keys, through RestrictedUnpickler."""
    try:
        with open(path, "rb") as f:
            obj = RestrictedUnpickler(f, encoding="latin1").load()
    except FileNotFoundError:
        raise DataError(f"CIFAR-100 file {path} does not exist; {FIX_HINT}") from None
    except pickle.UnpicklingError as err:
        raise DataError(f"refusing CIFAR-100 file {path}: {err}; it is not an original CIFAR-100 file, "
                        f"re-extract it from the official archive") from None
    except Exception as err:  # noqa: BLE001 - truncated or garbage files raise several kinds (EOFError, ValueError, ...)
        raise DataError(f"cannot unpickle CIFAR-100 file {path} ({type(err).__name__}: {err}); the file is "
                        f"truncated or corrupt, re-extract it; {FIX_HINT}") from None
    if not isinstance(obj, dict):
        raise DataError(f"CIFAR-100 file {path} holds a {type(obj).__name__}, not a dict; {FIX_HINT}")
    return {key.decode("latin1") if isinstance(key, bytes) else key: value for key, value in obj.items()}


def _field(batch: dict, key: str, path: Path):
    if key not in batch:
        raise DataError(f"CIFAR-100 file {path} lacks the {key!r} entry (has {sorted(map(str, batch))}); "
                        f"is it a CIFAR-10 file? {FIX_HINT}")
    return batch[key]


# ---------------------------------------------------------------- reading

def find_root(root: str | Path) -> Path:
    """The folder holding train, test and meta: `root` itself or `root/cifar-100-python`."""
    root = Path(root).expanduser()
    if (root / FOLDER).is_dir() and not (root / "meta").exists():
        root = root / FOLDER
    if not root.is_dir():
        raise DataError(f"CIFAR-100 folder {root} does not exist; {FIX_HINT}")
    missing = [name for name in ("meta", *SPLIT_FILES.values()) if not (root / name).is_file()]
    if missing:
        raise DataError(f"CIFAR-100 folder {root} lacks {', '.join(str(root / m) for m in missing)}; {FIX_HINT}")
    return root


def read_class_names(root: Path) -> list[str]:
    path = root / "meta"
    names = _field(load_pickle(path), "fine_label_names", path)
    names = [n.decode("latin1") if isinstance(n, bytes) else n for n in names]
    if len(names) != NUM_CLASSES or not all(isinstance(n, str) for n in names):
        raise DataError(f"CIFAR-100 file {path} has {len(names)} fine_label_names, expected {NUM_CLASSES} "
                        f"strings; {FIX_HINT}")
    return names


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> images uint8 (N, 32, 32, 3), labels int64 (N,)."""
    batch = load_pickle(path)
    data, labels = _field(batch, "data", path), _field(batch, "fine_labels", path)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * SIDE ** 2:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"CIFAR-100 file {path} has data {got}, expected uint8 (N, {3 * SIDE ** 2}); {FIX_HINT}")
    try:
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise DataError(f"CIFAR-100 file {path} has non-integer fine_labels; {FIX_HINT}") from None
    if len(labels) != len(data):
        raise DataError(f"CIFAR-100 file {path} has {len(data)} images but {len(labels)} fine_labels; {FIX_HINT}")
    if len(labels) and not (labels.min() >= 0 and labels.max() < NUM_CLASSES):
        raise DataError(f"CIFAR-100 file {path} has fine_labels outside 0..{NUM_CLASSES - 1}; {FIX_HINT}")
    # each row is three 32x32 planes (R, G, B), row-major -> (N, H, W, C)
    images = data.reshape(-1, 3, SIDE, SIDE).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def dataset_info(class_names: list[str]) -> dict:
    return {"num_classes": NUM_CLASSES, "class_names": list(class_names), "channels": 3,
            "height": SIDE, "width": SIDE, "mean": list(MEAN), "std": list(STD)}


def read_split(root: str | Path, split: str) -> SourceSplit:
    """CIFAR-100 "train" (50,000) or "val" (the test set, 10,000) as `image.npy` + `label.cls` samples."""
    if split not in SPLIT_FILES:
        raise DataError(f"CIFAR-100 has splits {', '.join(SPLIT_FILES)}, not {split!r}")
    root = find_root(root)
    class_names = read_class_names(root)
    images, labels = read_batch(root / SPLIT_FILES[split])

    def samples():
        for image, label in zip(images, labels):
            yield {RAW_IMAGE: encode_npy(np.ascontiguousarray(image)), "label.cls": encode_label(label)}

    return SourceSplit(samples=samples(), num_samples=len(images), fields=dict(FIELDS),
                       dataset_info=dataset_info(class_names))
