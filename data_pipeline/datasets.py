"""The dataset registry: every dataset `python -m data_pipeline write` converts and the trainer loads, in one place.

Each `DatasetSpec` owns both halves of its dataset:

* write time: its source module's `read_split(root, split, **write options) -> SourceSplit` (`sources/base.py`),
  the splits it writes by default and on request, the write-time options `read_split` takes (with their
  `python -m data_pipeline write` flags), whether it needs a folder of raw files, and whether the source module
  can find or download them itself (`fetch`);
* load time: its composer module's `build_composer(manifest, options) -> Composer` and its own load-time options
  dataclass, whose field names are the trainer's `data.*` keys, so that the trainer hands over its `data.*` values
  and the entry takes the ones its options declare (`composer_for`).

Modules are named, not imported: this module imports without torch (the trainer's config check reads
`dataset_names()`); a source or composer module is imported when a split is written or a composer is built.
Adding a dataset: a source module under `sources/` (read_split, and build_composer unless an existing composer
module fits) and one entry in DATASETS.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional

from data_pipeline.errors import DataError

if TYPE_CHECKING:
    from data_pipeline.shards import Manifest
    from data_pipeline.sources.base import Composer, SourceSplit

DEFAULT_CACHE = "~/seq-jepa/data/cache"  # where a source fetches raw files to (the trainer's data.cache_dir default)


# ------------------------------------------------------------ load-time options (field names = the trainer's data.*)

@dataclass(frozen=True)
class AffineOptions:
    """Fashion-MNIST, MNIST (and any image + label set): one image under sampled affine/photometric transformations
    (`sources/affine.py`); the ranges are `transforms.ActionSpace`'s."""

    rotation_deg: float = 90.0
    scale_min: float = 0.75
    scale_max: float = 1.25
    translate: float = 0.15
    brightness: float = 0.3
    contrast: float = 0.3
    announced_actions: Optional[tuple[str, ...]] = None  # the action groups the model is told; None: all
    image_size: Optional[int] = None  # side of the views; None: the stored side + transforms.CANVAS_MARGIN


@dataclass(frozen=True)
class AugmentationOptions:
    """CIFAR-100, Tiny-ImageNet: augmentation-conditioned sequences (`sources/augmented.py`)."""

    image_size: Optional[int] = None  # side of the views; None: the stored side
    blur: bool = True
    legacy_action_norm: bool = False
    legacy_pil_rounding: bool = False


@dataclass(frozen=True)
class ThreeDIEOptions:
    """3DIEBench: views of one object under rotations (and colours) (`sources/threedie.py`)."""

    latent_type: str = "rot"
    canonical_quaternions: bool = True


@dataclass(frozen=True)
class GlimpseOptions:
    """STL-10, ImageNet: glimpse sequences across saccades (`sources/glimpses.py`)."""

    fovea_size: int = 32
    use_saliency: bool = True
    inhibition_of_return: bool = True
    legacy_patch_transpose: bool = False
    crop_size: Optional[int] = None  # a random resized crop of this side first (ImageNet); None: the centre square


# ------------------------------------------------------------ the registry

@dataclass(frozen=True)
class WriteOption:
    """A write-time keyword of a source's `read_split`, and its `python -m data_pipeline write` flag."""

    name: str  # read_split's keyword
    flag: str  # the CLI flag that sets it
    help: str  # what it means for this dataset
    type: type = str


@dataclass(frozen=True)
class DatasetSpec:
    source: str  # module with read_split(root, split, **write options) -> SourceSplit (and fetch, if `fetches`)
    composer: str  # module with build_composer(manifest, options) -> Composer
    options: type = AffineOptions  # the load-time options dataclass build_composer takes
    splits: tuple[str, ...] = ("train", "val")  # written by default, in this order
    extra_splits: tuple[str, ...] = ()  # written only when asked for
    write_options: tuple[WriteOption, ...] = ()  # write-time keywords its read_split accepts
    needs_source: bool = True  # False: read_split (or fetch) finds the raw data itself when given no folder
    fetches: bool = False  # the source module's fetch(source_dir, cache_dir, *, system_packages) -> raw folder

    @property
    def write_option_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.write_options)

    def read_split(self, root: Path | None, split: str, **options) -> "SourceSplit":
        return importlib.import_module(self.source).read_split(root, split, **options)

    def fetch(self, source_dir: str | None, cache_dir: str | None, *, system_packages: bool = False) -> Path:
        """The folder of the raw files: `source_dir` checked, else found in the cache or downloaded into it."""
        return importlib.import_module(self.source).fetch(source_dir, cache_dir or DEFAULT_CACHE,
                                                          system_packages=system_packages)

    def load_options(self, values: Any = None):
        """This dataset's load-time options, each taken by name from `values` (a mapping, or an object such as the
        trainer's `config.data`); one `values` lacks keeps its default. Lists become tuples (options are frozen)."""
        if values is None:
            return self.options()
        names = [f.name for f in dataclasses.fields(self.options)]
        if isinstance(values, Mapping):
            found = {name: values[name] for name in names if name in values}
        else:
            found = {name: getattr(values, name) for name in names if hasattr(values, name)}
        return self.options(**{k: tuple(v) if isinstance(v, list) else v for k, v in found.items()})

    def build_composer(self, manifest: "Manifest", options) -> "Composer":
        return importlib.import_module(self.composer).build_composer(manifest, options)


_AFFINE, _AUGMENTED, _GLIMPSES = ("data_pipeline.sources.affine", "data_pipeline.sources.augmented",
                                  "data_pipeline.sources.glimpses")
_SALIENCY = WriteOption("saliency_root", "--saliency-dir", "folder of the saliency maps (optional)")

DATASETS: dict[str, DatasetSpec] = {
    "fashion-mnist": DatasetSpec("data_pipeline.sources.fashion_mnist", _AFFINE, AffineOptions, needs_source=False,
                                 fetches=True),
    "mnist": DatasetSpec("data_pipeline.sources.mnist", _AFFINE, AffineOptions, needs_source=False),
    "cifar100": DatasetSpec("data_pipeline.sources.cifar", _AUGMENTED, AugmentationOptions),
    "tinyimagenet": DatasetSpec("data_pipeline.sources.tinyimagenet", _AUGMENTED, AugmentationOptions),
    "3diebench": DatasetSpec("data_pipeline.sources.threedie", "data_pipeline.sources.threedie", ThreeDIEOptions,
                             extra_splits=("ood",), write_options=(
                                 WriteOption("index_dir", "--index-dir",
                                             "folder of the split index .npy files (default: source)"),
                                 WriteOption("image_size", "--image-size", "stored view side (128)", int))),
    "stl10": DatasetSpec("data_pipeline.sources.stl10", _GLIMPSES, GlimpseOptions,
                         splits=("train", "unlabeled", "val"), write_options=(_SALIENCY,)),
    "imagenet": DatasetSpec("data_pipeline.sources.imagenet", _GLIMPSES, GlimpseOptions, write_options=(
        _SALIENCY, WriteOption("image_size", "--image-size", "stored shorter side (224)", int))),
}

# A shard set of a dataset the registry does not name (`write_shards`' image + label sets) is composed like this one.
IMAGE_LABEL_SETS = "fashion-mnist"


def dataset_names() -> tuple[str, ...]:
    """The datasets the registry knows, the embedded default first (the trainer's valid `data.dataset` values)."""
    return tuple(DATASETS)


def dataset_spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[name]


def load_option_names() -> tuple[str, ...]:
    """Every load-time option any dataset takes (each a trainer `data.*` key), in registry order."""
    names = (f.name for spec in DATASETS.values() for f in dataclasses.fields(spec.options))
    return tuple(dict.fromkeys(names))


def composer_modules() -> tuple[str, ...]:
    """The modules that build the registry's composers (what a loader worker imports to unpickle one)."""
    return tuple(dict.fromkeys(spec.composer for spec in DATASETS.values()))


def composer_for(manifest: "Manifest", options: Any = None) -> "Composer":
    """How the samples of the shard set `manifest` describes become sequences with their actions: the composer of
    the dataset it names (one the registry does not name is composed like IMAGE_LABEL_SETS), set up from `options`:
    that dataset's options dataclass, or values by name that its options take theirs from (`load_options`: e.g. the
    trainer's `data.*` values, of which each dataset takes the ones it declares); None: the defaults."""
    spec = DATASETS.get(manifest.dataset, DATASETS[IMAGE_LABEL_SETS])
    if type(options) is not spec.options:
        options = spec.load_options(options)
    return spec.build_composer(manifest, options)
