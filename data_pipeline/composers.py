"""Which composer turns a shard set's samples into sequences: the dataset its manifest names, set up from options.

This is the load-time half of every source (`sources/`); the loader picks one with
`composer_for(manifest, options)` from the `ComposerOptions` the trainer passes, so the trainer never imports a
source module itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from data_pipeline.shards import Manifest
from data_pipeline.sources.affine import AffineComposer
from data_pipeline.sources.augmented import AugmentationComposer
from data_pipeline.sources.base import Composer
from data_pipeline.sources.glimpses import GlimpseComposer
from data_pipeline.sources.threedie import ThreeDIEComposer
from data_pipeline.transforms import CANVAS_MARGIN, ActionSpace


@dataclass(frozen=True)
class ComposerOptions:
    """The load-time options of every dataset family; each composer reads its own (see the trainer's `data.*`)."""

    action_space: ActionSpace = field(default_factory=ActionSpace)  # fashion-mnist / image + label sets
    announced_actions: Optional[tuple[str, ...]] = None  # fashion-mnist / image + label sets; None: all groups
    image_size: Optional[int] = None  # fashion-mnist, cifar100, tinyimagenet; None: natural size
    blur: bool = True  # cifar100/tinyimagenet
    legacy_action_norm: bool = False  # cifar100/tinyimagenet
    latent_type: str = "rot"  # 3diebench
    canonical_quaternions: bool = True  # 3diebench
    fovea_size: int = 32  # stl10/imagenet
    use_saliency: bool = True
    inhibition_of_return: bool = True
    legacy_patch_transpose: bool = False
    crop_size: Optional[int] = None  # imagenet


def composer_for(manifest: Manifest, options: ComposerOptions) -> Composer:
    """How the samples of the shard set `manifest` describes become sequences with their actions."""
    o, info = options, manifest.dataset_info
    if manifest.dataset in ("cifar100", "tinyimagenet"):
        return AugmentationComposer.for_dataset(info, blur=o.blur, legacy_view_norm=o.legacy_action_norm,
                                                image_size=o.image_size)
    if manifest.dataset == "3diebench":
        return ThreeDIEComposer(latent_type=o.latent_type, canonical_quaternions=o.canonical_quaternions)
    if manifest.dataset in ("stl10", "imagenet"):
        return GlimpseComposer(fovea_size=o.fovea_size, use_saliency=o.use_saliency,
                               inhibition_of_return=o.inhibition_of_return, legacy_transpose=o.legacy_patch_transpose,
                               crop=o.crop_size)
    # Fashion-MNIST and any image + label set: one image under sampled affine/photometric transformations.
    size = o.image_size or max(info["height"], info["width"]) + CANVAS_MARGIN
    return AffineComposer.for_shards(o.action_space, size, manifest, o.announced_actions)
