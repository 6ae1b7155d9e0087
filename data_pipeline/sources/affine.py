"""Sequences of one image under known affine and photometric transformations (the embedded default).

Used for Fashion-MNIST (and any image + label shard set): each sequence is M+1 views of one source
image under rotation, scale, translation, brightness and contrast, whose sampled parameters are the
actions (see `data_pipeline.transforms` for the conventions). `announced` picks the action groups the
model is told; the others still vary, unannounced, as colour and lighting do in the paper's 3DIEBench runs
conditioned on rotation alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from data_pipeline.errors import DataError
from data_pipeline.sources.base import RENDER_INPUTS, PlannedComposer, decode_image, decode_label
from data_pipeline.transforms import (
    ACTION_DIM,
    ACTION_GROUPS,
    CANVAS_MARGIN,
    ActionSpace,
    absolute_actions,
    path_actions,
    relative_actions,
    render_views,
    sample_params,
)


@dataclass(frozen=True)
class AffineComposer(PlannedComposer):
    space: ActionSpace
    image_size: int  # side of the rendered views
    height: int  # the stored images' geometry and label range, from the manifest
    width: int
    channels: int
    num_classes: int
    announced: Optional[tuple[str, ...]] = None  # the action groups in the actions, in ACTION_GROUPS order; None: all

    def __post_init__(self):
        unknown = set(self.announced or ()) - set(ACTION_GROUPS)
        if unknown or self.announced == ():
            raise DataError(f"announced actions must be a non-empty subset of {', '.join(ACTION_GROUPS)}, got "
                            f"{list(self.announced)}")

    @classmethod
    def for_shards(cls, space: ActionSpace, image_size: int, manifest,
                   announced: Optional[tuple[str, ...]] = None) -> "AffineComposer":
        """The composer for a shard set, its geometry and label range taken from the set's manifest."""
        info = manifest.dataset_info
        return cls(space, image_size, height=info["height"], width=info["width"], channels=info["channels"],
                   num_classes=info["num_classes"], announced=announced)

    @property
    def groups(self) -> list[str]:
        return [g for g in ACTION_GROUPS if self.announced is None or g in self.announced]

    @property
    def dims(self) -> list[int]:
        """The announced dims of the full action vector, in order."""
        return [d for g in self.groups for d in ACTION_GROUPS[g]]

    @property
    def action_dim(self) -> int:
        return len(self.dims) if self.announced is not None else ACTION_DIM

    @property
    def action_groups(self) -> dict[str, list[int]]:
        """Each announced group's dims in the (possibly reduced) action vector."""
        groups, start = {}, 0
        for g in self.groups:
            groups[g] = list(range(start, start + len(ACTION_GROUPS[g])))
            start += len(ACTION_GROUPS[g])
        return groups

    def decode(self, sample: dict[str, bytes]) -> tuple[np.ndarray, int]:
        """(image uint8 (H, W) or (H, W, C), label); raises on anything that disagrees with the manifest."""
        image = decode_image(sample["image.png"])
        expected = (self.height, self.width) + (() if self.channels == 1 else (self.channels,))
        if image.dtype != np.uint8 or image.shape != expected:
            raise ValueError(f"image is {image.dtype} {image.shape}, the manifest says uint8 {expected}")
        return image, decode_label(sample["label.cls"], self.num_classes)

    def plan(self, records: list[tuple[np.ndarray, int]], num_views: int, generator: torch.Generator) -> dict:
        """The actions and labels; to render: the source images (B, C, H, W) uint8 and their params (B, V, 6)."""
        images = torch.from_numpy(np.stack([image for image, _ in records]))
        images = images.unsqueeze(1) if images.dim() == 3 else images.permute(0, 3, 1, 2).contiguous()
        params = sample_params(len(records), num_views, self.space, generator)
        keep = self.dims if self.announced is not None else slice(None)
        return {"actions": absolute_actions(params, self.space)[..., keep],
                "rel_actions": relative_actions(params, self.space)[..., keep],
                "path_actions": path_actions(params, self.space)[..., keep],
                "label": torch.tensor([label for _, label in records], dtype=torch.int64),
                RENDER_INPUTS: {"images": images, "params": params}}

    def render(self, inputs: dict, device: torch.device) -> dict[str, torch.Tensor]:
        images, params = (inputs[key].to(device, non_blocking=True) for key in ("images", "params"))
        return {"views": render_views(images, params, self.image_size)}


def build_composer(manifest, options) -> AffineComposer:
    """The composer of an image + label shard set (Fashion-MNIST, MNIST, ...) set up from its load-time options
    (`datasets.AffineOptions`: the transformations' ranges, the announced groups, the views' side)."""
    space = ActionSpace(rotation_deg=options.rotation_deg, scale_min=options.scale_min, scale_max=options.scale_max,
                        translate=options.translate, brightness=options.brightness, contrast=options.contrast)
    info = manifest.dataset_info
    size = options.image_size or max(info["height"], info["width"]) + CANVAS_MARGIN
    return AffineComposer.for_shards(space, size, manifest, options.announced_actions)
