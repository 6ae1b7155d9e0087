"""Load time for the augmentation-conditioned sources (CIFAR-100, Tiny-ImageNet;
docs/paper-and-original-code.md#augmentation-actions, #cifar-100-dataset, #tiny-imagenet-dataset).

A shard sample (`image.npy` raw RGB, or `image.png` from the earlier writer; `label.cls`) decodes to an
`ImageRecord`; a list of records composes into a batch of augmented sequences through `augment.compose_batch`:
V-1 observation views and the target view last, each with its 9-d action (8 without blur), relative actions
between consecutive views, the label, and the un-augmented image (`orig`).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from data_pipeline import augment
from data_pipeline.augment import ObservationPipeline, TargetPipeline
from data_pipeline.errors import DataError
from data_pipeline.sources.base import RAW_IMAGE, PlannedComposer, decode_raw_image

_LABEL = re.compile(rb"\s*[0-9]+\s*")


def _is_size(value) -> bool:
    return isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(s, int) and s > 0 for s in value)


@dataclass(frozen=True)
class ImageRecord:
    image: np.ndarray  # uint8 (H, W, 3)
    label: int


@dataclass(frozen=True)
class AugmentationComposer(PlannedComposer):
    """Decodes image samples and composes them into augmented sequences; picklable (sent to workers)."""

    observation: ObservationPipeline = ObservationPipeline()
    target: TargetPipeline = TargetPipeline()
    blur: bool = True  # False: no blur op and no sigma coordinate (the original's --no-blur), A = 8
    legacy_view_norm: bool = False  # True: the original's L2 normalisation over the view axis
    # (docs/paper-and-original-code.md#c6-action-normalisation-across-views)
    pil_rounding: bool = False  # True: views rounded after every op as the original's PIL images (augment_ops_pil)
    image_size: int | None = None  # side S of the views; None: the source side
    source_size: tuple[int, int] | None = None  # expected (height, width) of decoded images; None: any
    num_classes: int | None = None  # labels must lie in 0..num_classes-1; None: any non-negative int

    def __post_init__(self):
        problems = [msg for bad, msg in [
            (not isinstance(self.observation, ObservationPipeline), "observation must be an ObservationPipeline"),
            (not isinstance(self.target, ObservationPipeline), "target must be an ObservationPipeline too"),
            (self.image_size is not None and not (isinstance(self.image_size, int) and self.image_size > 0),
             f"image_size must be a positive int or None, got {self.image_size!r}"),
            (self.source_size is not None and not _is_size(self.source_size),
             f"source_size must be (height, width) or None, got {self.source_size!r}"),
            (self.num_classes is not None and not self.num_classes > 0,
             f"num_classes must be positive or None, got {self.num_classes!r}"),
        ] if bad]
        if problems:
            raise DataError(f"invalid AugmentationComposer: {'; '.join(problems)}")
        if self.source_size is not None:
            object.__setattr__(self, "source_size", tuple(int(s) for s in self.source_size))

    @classmethod
    def for_dataset(cls, dataset_info: dict, **options) -> "AugmentationComposer":
        """A composer that checks samples against a manifest's dataset_info (size, classes)."""
        return cls(source_size=(dataset_info["height"], dataset_info["width"]),
                   num_classes=dataset_info["num_classes"], **options)

    @property
    def action_dim(self) -> int:
        return augment.action_dim(self.blur)

    @property
    def action_groups(self) -> dict[str, list[int]]:
        return augment.action_groups(self.blur)

    def decode(self, sample: dict[str, bytes]) -> ImageRecord:
        """One shard sample -> ImageRecord; ValueError on anything that is not what the writer wrote."""
        image_field = RAW_IMAGE if RAW_IMAGE in sample else "image.png"  # PNG: shards of the earlier writer
        missing = [key for key in (image_field, "label.cls") if key not in sample]
        if missing:
            raise ValueError(f"sample lacks {', '.join(missing)} (has {', '.join(sorted(sample))})")
        if image_field == RAW_IMAGE:
            array = decode_raw_image(sample[RAW_IMAGE])
        else:
            with Image.open(io.BytesIO(sample["image.png"])) as image:
                if image.format != "PNG" or image.mode != "RGB":
                    raise ValueError(f"image.png is a {image.format} in mode {image.mode}, expected an RGB PNG")
                array = np.array(image)
        if self.source_size is not None and array.shape[:2] != self.source_size:
            raise ValueError(f"image is {array.shape[0]}x{array.shape[1]}, expected "
                             f"{self.source_size[0]}x{self.source_size[1]}")
        raw = sample["label.cls"]
        if not isinstance(raw, bytes) or not _LABEL.fullmatch(raw):
            raise ValueError(f"label.cls is {repr(raw)[:40]}, expected a non-negative decimal integer")
        label = int(raw)
        if self.num_classes is not None and label >= self.num_classes:
            raise ValueError(f"label {label} outside 0..{self.num_classes - 1}")
        return ImageRecord(array, label)

    def plan(self, records: list[ImageRecord], num_views: int, generator: torch.Generator | None = None) -> dict:
        """Records -> actions (B, V, A), rel_actions (B, V-1, A), path_actions, label; to render: the source images
        and the views' drawn parameters (`augment.plan_batch`)."""
        if not records:
            raise ValueError("compose needs at least one record")
        shapes = {record.image.shape for record in records}
        if len(shapes) != 1:
            raise ValueError(f"records of one batch must share an image shape, got {sorted(shapes)}")
        images = np.stack([record.image for record in records])
        labels = [record.label for record in records]
        return augment.plan_batch(images, labels, num_views=num_views, generator=generator,
                                  observation=self.observation, target=self.target, blur=self.blur,
                                  legacy_view_norm=self.legacy_view_norm)

    def render(self, inputs: dict, device: torch.device) -> dict[str, torch.Tensor]:
        """views uint8 (B, V, 3, S, S) and orig uint8 (B, 3, S, S) on `device` (`augment.render_batch`)."""
        return augment.render_batch(inputs, device, self.image_size, self.observation, self.target, self.pil_rounding)


def build_composer(manifest, options) -> AugmentationComposer:
    """The composer of a CIFAR-100 or Tiny-ImageNet shard set, from its load-time options
    (`datasets.AugmentationOptions`), checking samples against the set's manifest."""
    return AugmentationComposer.for_dataset(manifest.dataset_info, blur=options.blur,
                                            legacy_view_norm=options.legacy_action_norm,
                                            pil_rounding=options.legacy_pil_rounding, image_size=options.image_size)
