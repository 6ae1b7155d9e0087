"""3DIEBench (and 3DIEBench-OOD) as a source: rendered ShapeNet objects, seen under random rotations
and lighting; the action between two views is the change of those latents
(docs/paper-and-original-code.md#3diebench-actions, #3diebench-dataset, #3diebench-ood).

On disk (SIE's layout): `ROOT/<synset>/<object_id>/image_{k}.jpg` with `latent_{k}.npy`, k = 0..49
(3DIEBench-OOD: k = 2..5, rendered for only part of the val objects). The object list of a split
comes from the index files `{train,val}_images.npy` (paths like "/02691156/dc8d.../") and
`{train,val}_labels.npy` (int64, 55 classes); "ood" reads the val index and skips the objects that
were never rendered.

Shard sample = one object, all its views (so a sequence can be drawn at load time, as the original
does per item):
    views.bin         the K available views' RGB JPEGs (resized to image_size x image_size), one after the other
    views.npy         (K, 2) int64: per view, its index k on disk and its JPEG's length in views.bin
    latents.npy       (K, 7) float32, row i belongs to the i-th view of views.npy:
                      [rot_x, rot_y, rot_z, floor_hue, spot_theta, spot_phi, spot_hue],
                      rotation as extrinsic "xyz" Euler angles (see `rotations`)
    label.cls         class index, 0..54
    object.txt        "<synset>/<object_id>", for tracing a sample back to its files

Load time (`ThreeDIEComposer`): per object draw V distinct views uniformly (the draw order is the
sequence order, the last one is the target), decode only those, and derive the actions from the
latents per `latent_type`:
    rot       quaternion (x, y, z, w)                                 A = 4
    rotcolor  [quaternion, floor_hue, spot_hue]                       A = 6
    color     [floor_hue, spot_hue]                                   A = 2
    all       [quaternion, floor_hue, spot_theta, spot_phi, spot_hue] A = 8
Relative action j -> j+1: the quaternion of R_j^-1 R_{j+1} and plain differences of the rest
(no wrap-around of hues or phi, as in the original). Path action 0 -> j+1 (path integration,
docs/paper-and-original-code.md#path-integration): the same between the first view and view j+1, i.e. the composed
rotation R_0^-1 R_{j+1}.
`canonical_quaternions=True` (the fix, docs/paper-and-original-code.md#b11-quaternion-sign) gives every quaternion
w >= 0; False keeps the original's raw signs (about 4 % of relative quaternions have w < 0, a sign discontinuity in
regression targets).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from data_pipeline.errors import DataError
from data_pipeline.sources.base import (
    RENDER_INPUTS,
    PlannedComposer,
    SourceSplit,
    decode_jpegs,
    decode_label,
    decode_npy,
    encode_jpeg,
    encode_label,
    encode_npy,
    looks_like_jpeg,
)
from data_pipeline.sources.threedie_actions import (
    ACTION_GROUPS,
    EXTRA_COLUMNS,
    LATENT_TYPES,
    latent_actions,
    path_latent_actions,
)

NUM_CLASSES = 55
LATENT_NAMES = ("rot_x", "rot_y", "rot_z", "floor_hue", "spot_theta", "spot_phi", "spot_hue")
MEAN = [0.5016, 0.5037, 0.5060]  # per-channel pixel statistics on [0, 1] intensities
# (docs/paper-and-original-code.md#3diebench-dataset)
STD = [0.1030, 0.0999, 0.0969]
SPLITS = {"train": "train", "val": "val", "ood": "val"}  # split -> the index files it reads
RESAMPLE = Image.BICUBIC  # PIL's resize filters are antialiased when shrinking
JPEG_QUALITY = 95
FIX_HINT = ("point data.source_dir (CLI: --source-dir) at the extracted 3DIEBench folder "
            "(3DIEBench-OOD for split 'ood') and the index folder at the .npy files from seq-jepa/data/3DIEBench")
FIELDS = {
    "views.bin": "the K RGB JPEGs of the object's views (image_size x image_size), one after the other",
    "views.npy": "int64 (K, 2): per view, its index on disk and its JPEG's length in views.bin",
    "latents.npy": "float32 (K, 7) latents of the K views in views.npy order: " + ", ".join(LATENT_NAMES)
                   + "; rotation as extrinsic xyz Euler angles (radians)",
    "label.cls": f"class index 0..{NUM_CLASSES - 1} (ASCII)",
    "object.txt": "<synset>/<object_id> (ASCII)",
}

_IMAGE_NAME = re.compile(r"image_(\d+)\.jpg")


def pack_views(views: dict[int, bytes]) -> dict[str, bytes]:
    """All views of an object in two fields: a tar member per view costs more to read than its decode
    (measured: tar parsing was 70 % of the loader's time with 52 members per object)."""
    ids = sorted(views)
    index = np.array([[k, len(views[k])] for k in ids], dtype=np.int64).reshape(-1, 2)
    return {"views.bin": b"".join(views[k] for k in ids), "views.npy": encode_npy(index)}


def _required(sample: dict[str, bytes], field: str) -> bytes:
    if field not in sample:
        raise ValueError(f"sample lacks field {field}")
    return sample[field]


def _npy_field(sample: dict[str, bytes], field: str) -> np.ndarray:
    data = _required(sample, field)
    try:
        return decode_npy(data)
    except Exception as err:  # noqa: BLE001 - numpy raises ValueError, EOFError, ... on a broken file
        raise ValueError(f"{field} is unreadable: {err}") from None


class PackedViews(Sequence):
    """The views of a sample as one blob and where each view ends in it: a view is sliced out only when drawn
    (slicing all ~50 of them cost as much as reading the sample)."""

    def __init__(self, blob: bytes, ends: np.ndarray):
        self.blob, self.ends = blob, ends

    def __len__(self) -> int:
        return len(self.ends)

    def __getitem__(self, i: int) -> bytes:
        return self.blob[(self.ends[i - 1] if i else 0):self.ends[i]]


def packed_views(sample: dict[str, bytes]) -> tuple[np.ndarray, PackedViews]:
    """(the views' indices on disk, their JPEG bytes) of a sample written by `pack_views`, in the written order;
    raises ValueError if views.bin and views.npy disagree or a view does not start like a JPEG."""
    blob = _required(sample, "views.bin")
    index = _npy_field(sample, "views.npy")
    if index.ndim != 2 or index.shape[1] != 2 or index.dtype.kind != "i" or len(index) == 0:
        raise ValueError(f"views.npy is {index.dtype} {index.shape}, expected int (K >= 1, 2)")
    lengths = index[:, 1]
    if (lengths <= 0).any() or int(lengths.sum()) != len(blob):
        raise ValueError(f"views.npy lengths add up to {int(lengths.sum())} bytes, views.bin has {len(blob)}")
    ends = np.cumsum(lengths)
    starts, data = ends - lengths, np.frombuffer(blob, np.uint8)
    if (lengths < 2).any() or (data[starts] != 0xFF).any() or (data[starts + 1] != 0xD8).any():
        raise ValueError("a view does not hold a JPEG image")  # no JPEG start-of-image marker
    return index[:, 0], PackedViews(blob, ends)


def unpack_views(sample: dict[str, bytes]) -> dict[int, bytes]:
    """{view index: JPEG bytes} of a sample written by `pack_views`; raises ValueError if they disagree."""
    ids, views = packed_views(sample)
    return {int(k): views[i] for i, k in enumerate(ids.tolist())}


@dataclass(frozen=True)
class ObjectEntry:
    """One object of a split, as found on disk."""

    name: str  # "<synset>/<object_id>"
    label: int
    views: tuple[int, ...]  # indices k of the views on disk, ascending


# ---------------------------------------------------------------- write time

def read_index(index_dir: str | Path, split: str) -> tuple[list[str], np.ndarray]:
    """Object names ("<synset>/<object_id>", leading/trailing "/" stripped) and int64 labels of a split."""
    if split not in SPLITS:
        raise DataError(f"unknown 3DIEBench split {split!r}; choose one of {sorted(SPLITS)}")
    index_dir = Path(index_dir)
    arrays = []
    for kind in ("images", "labels"):
        path = index_dir / f"{SPLITS[split]}_{kind}.npy"
        if not path.is_file():
            raise DataError(f"3DIEBench index file {path} does not exist; {FIX_HINT}")
        try:
            arrays.append(np.load(path, allow_pickle=False))
        except (OSError, ValueError, EOFError) as err:
            raise DataError(f"cannot read 3DIEBench index file {path} ({err}); restore it from "
                            "seq-jepa/data/3DIEBench") from None
    images, labels = arrays
    if images.ndim != 1 or images.dtype.kind not in "US" or labels.shape != images.shape \
            or labels.dtype.kind not in "iu":
        raise DataError(f"3DIEBench index files in {index_dir} for split {split!r} do not match: images "
                        f"{images.dtype} {images.shape}, labels {labels.dtype} {labels.shape} (expected strings "
                        f"and integers of one length); restore them from seq-jepa/data/3DIEBench")
    names = [(p.decode() if isinstance(p, bytes) else str(p)).strip("/") for p in images]
    labels = labels.astype(np.int64)
    bad = np.flatnonzero((labels < 0) | (labels >= NUM_CLASSES))
    if bad.size:
        raise DataError(f"3DIEBench index {index_dir / (SPLITS[split] + '_labels.npy')}: label {labels[bad[0]]} "
                        f"at row {bad[0]} is outside 0..{NUM_CLASSES - 1}; restore it from seq-jepa/data/3DIEBench")
    return names, labels


def class_names(names: list[str], labels: np.ndarray) -> list[str]:
    """The synset id of each class, read off the index (label i's objects all live under one synset);
    classes absent from the index are named "class_<i>"."""
    synsets: dict[int, str] = {}
    for name, label in zip(names, labels.tolist()):
        synset = name.split("/")[0]
        if synsets.setdefault(label, synset) != synset:
            raise DataError(f"3DIEBench index: label {label} is used for synsets {synsets[label]} and {synset}; "
                            "the index files are inconsistent, restore them from seq-jepa/data/3DIEBench")
    return [synsets.get(i, f"class_{i}") for i in range(NUM_CLASSES)]


def object_views(folder: Path) -> tuple[int, ...]:
    """Indices k of the `image_{k}.jpg` files in an object folder, ascending."""
    found = (_IMAGE_NAME.fullmatch(entry.name) for entry in folder.iterdir())
    return tuple(sorted(int(match.group(1)) for match in found if match))


def scan_objects(root: Path, names: list[str], labels: np.ndarray,
                 skip_missing: bool) -> tuple[list[ObjectEntry], int]:
    """The split's objects with their views on disk, and how many were skipped as never rendered.

    Done up front (one directory listing per object) so the sample count is exact and a broken
    dataset fails before any shard is written."""
    entries, missing = [], 0
    for name, label in zip(names, labels.tolist()):
        folder = root / name
        if not folder.is_dir():
            if skip_missing:
                missing += 1
                continue
            raise DataError(f"3DIEBench object folder {folder} (listed in the index) does not exist; "
                            f"the dataset is incomplete or the root is wrong: {FIX_HINT}")
        views = object_views(folder)
        if not views:
            raise DataError(f"3DIEBench object folder {folder} holds no image_<k>.jpg; re-extract that object "
                            f"or the whole dataset ({FIX_HINT})")
        entries.append(ObjectEntry(name, label, views))
    return entries, missing


def load_view(folder: Path, k: int, image_size: int) -> tuple[bytes, np.ndarray]:
    """(JPEG bytes at image_size, float32 (7,) latents) of view k of an object."""
    image_path, latent_path = folder / f"image_{k}.jpg", folder / f"latent_{k}.npy"
    try:
        latents = np.load(latent_path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"3DIEBench view {image_path} has no {latent_path.name} beside it; re-extract "
                        "that object") from None
    except (OSError, ValueError, EOFError) as err:
        raise DataError(f"cannot read 3DIEBench latents {latent_path} ({err}); re-extract that object") from None
    if latents.shape != (len(LATENT_NAMES),) or latents.dtype.kind != "f" or not np.isfinite(latents).all():
        raise DataError(f"3DIEBench latents {latent_path} are {latents.dtype} {latents.shape}, expected "
                        f"{len(LATENT_NAMES)} finite floats; re-extract that object")
    try:
        raw = image_path.read_bytes()
        with Image.open(io.BytesIO(raw)) as image:
            image.load()  # decode now: a truncated file must fail here, not in a training worker
            if image.format == "JPEG" and image.mode == "RGB" and image.size == (image_size, image_size):
                jpeg = raw  # already the wanted size: keep the original bytes, no second JPEG loss
            else:
                image = image.convert("RGB").resize((image_size, image_size), RESAMPLE)
                jpeg = encode_jpeg(np.asarray(image), quality=JPEG_QUALITY)
    except OSError as err:  # PIL's UnidentifiedImageError and truncated files are OSErrors
        raise DataError(f"cannot read 3DIEBench image {image_path} ({err}); re-extract that object") from None
    return jpeg, latents.astype(np.float32)


def encode_object(root: Path, entry: ObjectEntry, image_size: int) -> dict[str, bytes]:
    """One shard sample: every view of the object plus its latents, label and name."""
    folder = root / entry.name
    views, latents = {}, []
    for k in entry.views:
        views[k], latent = load_view(folder, k, image_size)
        latents.append(latent)
    sample = pack_views(views)
    sample["latents.npy"] = encode_npy(np.stack(latents))
    sample["label.cls"] = encode_label(entry.label)
    sample["object.txt"] = entry.name.encode("ascii")
    return sample


def read_split(root: str | Path, split: str, *, index_dir: str | Path | None = None,
               image_size: int = 128) -> SourceSplit:
    """A 3DIEBench split ("train", "val", or "ood" = 3DIEBench-OOD under `root`) as shard samples.

    `index_dir` holds the index .npy files (default: root). dataset_info adds "views_per_object"
    (the fewest views any object has, so any num_views up to it can be drawn) and "missing_objects"
    (index objects skipped as not rendered; only "ood" skips, the other splits need every object)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"3DIEBench root {root} does not exist or is not a folder; {FIX_HINT}")
    if image_size < 1:
        raise DataError(f"image_size must be positive, got {image_size}")
    names, labels = read_index(root if index_dir is None else index_dir, split)
    entries, missing = scan_objects(root, names, labels, skip_missing=split == "ood")
    if not entries:
        raise DataError(f"none of the {len(names)} objects of the 3DIEBench {split} index exists under {root}; "
                        f"{FIX_HINT}")
    info = {"num_classes": NUM_CLASSES, "class_names": class_names(names, labels), "channels": 3,
            "height": image_size, "width": image_size, "mean": list(MEAN), "std": list(STD),
            "views_per_object": min(len(e.views) for e in entries), "missing_objects": missing,
            "latent_names": list(LATENT_NAMES)}

    def samples() -> Iterator[dict[str, bytes]]:
        for entry in entries:
            yield encode_object(root, entry, image_size)

    return SourceSplit(samples=samples(), num_samples=len(entries), fields=dict(FIELDS), dataset_info=info)


# ---------------------------------------------------------------- load time

@dataclass(frozen=True)
class ThreeDIERecord:
    """A decoded sample; the views stay JPEG bytes until drawn."""

    views: Sequence[bytes]  # PackedViews as decoded from a shard
    view_ids: tuple[int, ...]  # the views' indices on disk, ascending; latents rows follow this order
    latents: np.ndarray  # float32 (K, 7)
    label: int


@dataclass(frozen=True)
class ThreeDIEComposer(PlannedComposer):
    """Shard samples of 3DIEBench -> batches of V-view sequences with rotation/colour actions."""

    latent_type: str = "rot"  # rot | rotcolor | color | all (docs/paper-and-original-code.md#3diebench-actions)
    canonical_quaternions: bool = True  # w >= 0 for every quaternion; False = the original's raw signs

    def __post_init__(self):
        if self.latent_type not in LATENT_TYPES:
            raise DataError(f"unknown 3DIEBench latent_type {self.latent_type!r}; choose one of {list(LATENT_TYPES)}")

    @property
    def action_dim(self) -> int:
        rotation, columns = EXTRA_COLUMNS[self.latent_type]
        return 4 * rotation + len(columns)

    @property
    def action_groups(self) -> dict[str, list[int]]:
        return {name: list(dims) for name, dims in ACTION_GROUPS[self.latent_type].items()}

    def decode(self, sample: dict[str, bytes]) -> ThreeDIERecord:
        """Check one shard sample and keep its views as JPEG bytes; raises ValueError on anything off."""
        ids, views = packed_views(sample)
        latents, label = _npy_field(sample, "latents.npy"), _required(sample, "label.cls")
        if latents.shape != (len(ids), len(LATENT_NAMES)) or latents.dtype.kind != "f":
            raise ValueError(f"latents.npy is {latents.dtype} {latents.shape}, expected floats "
                             f"({len(ids)}, {len(LATENT_NAMES)}) for {len(ids)} views")
        if not np.isfinite(latents).all():
            raise ValueError("latents.npy holds non-finite values")
        if (np.diff(ids) <= 0).any():  # written ascending (pack_views): the latents rows follow that order
            raise ValueError(f"views.npy lists the view indices {ids.tolist()} out of order")
        return ThreeDIERecord(views=views, view_ids=tuple(ids.tolist()), latents=latents.astype(np.float32),
                              label=decode_label(label, NUM_CLASSES))

    def plan(self, records: list[ThreeDIERecord], num_views: int, generator: torch.Generator) -> dict:
        """Draw num_views distinct views per object (draw order = sequence order) and add their actions; to render:
        the drawn views' JPEG bytes, decoded where they are rendered (`render`)."""
        if num_views < 1:
            raise ValueError(f"num_views must be at least 1, got {num_views}")
        jpegs, latents = [], []
        for record in records:
            if len(record.views) < num_views:
                raise ValueError(f"a sample has {len(record.views)} views (ids {list(record.view_ids)}) but "
                                 f"num_views={num_views} distinct ones were asked for; lower the sequence length")
            drawn = torch.randperm(len(record.views), generator=generator)[:num_views].tolist()
            for i in drawn:
                if not looks_like_jpeg(record.views[i]):
                    raise ValueError(f"view {record.view_ids[i]} is not a complete JPEG")
            jpegs += [record.views[i] for i in drawn]
            latents.append(record.latents[drawn])
        latents = torch.from_numpy(np.stack(latents))
        actions, rel_actions = latent_actions(latents, self.latent_type, self.canonical_quaternions)
        path = path_latent_actions(latents, self.latent_type, self.canonical_quaternions)
        return {"actions": actions.float(), "rel_actions": rel_actions.float(), "path_actions": path.float(),
                "label": torch.tensor([record.label for record in records], dtype=torch.int64),
                RENDER_INPUTS: {"jpegs": jpegs, "num_views": num_views}}

    def render(self, inputs: dict, device: torch.device) -> dict[str, torch.Tensor]:
        """The drawn views decoded, uint8 (B, V, 3, H, W) on `device` (nvJPEG on CUDA where torchvision is
        installed, else Pillow)."""
        jpegs, num_views = inputs["jpegs"], int(inputs["num_views"])
        try:
            views = decode_jpegs(jpegs, device)
        except Exception as err:  # noqa: BLE001 - PIL raises several kinds; sizes may differ (torch.stack)
            raise ValueError(f"the drawn views do not decode to images of one size: {err}") from None
        return {"views": views.view(len(jpegs) // num_views, num_views, *views.shape[1:])}


def build_composer(manifest, options) -> ThreeDIEComposer:
    """The composer of a 3DIEBench shard set, from its load-time options (`datasets.ThreeDIEOptions`)."""
    return ThreeDIEComposer(latent_type=options.latent_type, canonical_quaternions=options.canonical_quaternions)
