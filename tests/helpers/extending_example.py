"""The README's "Extending" examples of a new method and a new dataset, kept true by tests/unit/test_extending.py.

In the project the method would be `trainer/methods/cosine.py` plus one line in `trainer/methods/catalog.py`, the
dataset `data_pipeline/sources/stripes.py` plus one entry in `data_pipeline/datasets.py`; here the tests register
the entries themselves, which works in one process (a Ray worker imports only the files).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from data_pipeline.datasets import AffineOptions, DatasetSpec
from data_pipeline.shards import FIELDS
from data_pipeline.sources.base import SourceSplit, encode_label, encode_png
from trainer.errors import ConfigError
from trainer.methods.base import Method, MethodOutput, detached
from trainer.methods.catalog import INVARIANT, MethodEntry


@dataclass
class CosineSettings:  # the method's config section, `cosine.*`
    width: int = 64  # projector output width

    def check(self, section: str) -> None:
        if self.width < 1:
            raise ConfigError(f"{section}.width must be >= 1, got {self.width}")


class CosineInvariance(Method):
    """Pulls the projections of views 0 and 1 together. A toy (nothing stops a collapse): it shows the interface."""

    name = "cosine"

    def __init__(self, encoder: nn.Module, action_dim: int, settings: CosineSettings, action_proj_dim: int = 128):
        super().__init__()
        self.encoder = encoder
        self.projector = nn.Linear(encoder.out_dim, settings.width)

    def shard_units(self) -> list[nn.Module]:
        return [self.projector]

    def forward(self, views: torch.Tensor, rel_actions: torch.Tensor,
                abs_actions: Optional[torch.Tensor] = None) -> MethodOutput:
        z1, z2, _ = self.encode_first_pair(views, rel_actions)
        similarity = F.cosine_similarity(self.projector(z1).float(), self.projector(z2).float()).mean()
        loss = 1 - similarity
        return MethodOutput(loss, z1, z2, logs=detached(similarity=similarity))  # logged as train/loss/similarity


# The catalogue line (in trainer/methods/catalog.py it names the module "trainer.methods.cosine").
ENTRY = MethodEntry("cosine", __name__, "CosineInvariance", INVARIANT, "Cosine", CosineSettings)


# ---------------------------------------------------------------------------------------------------------------
# A dataset: 16x16 images of stripes at one of 4 orientations (the label), written as image + label samples and
# composed at load time like (Fashion-)MNIST, under sampled rotations, scalings, shifts, brightness and contrast.

def read_split(root: Path | None, split: str) -> SourceSplit:
    """The split's samples: 64 synthetic images (train and val draw different phases)."""
    rows, cols = np.mgrid[0:16, 0:16]
    phases = np.arange(64) + (0.5 if split == "val" else 0.0)

    def image(index: int) -> np.ndarray:
        angle = np.pi / 4 * (index % 4)
        wave = np.sin((rows * np.cos(angle) + cols * np.sin(angle)) * 1.3 + phases[index])
        return ((wave + 1) * 127.5).astype(np.uint8)

    def samples():
        for index in range(len(phases)):
            yield {"image.png": encode_png(image(index)), "label.cls": encode_label(index % 4)}

    info = {"num_classes": 4, "class_names": ["0", "45", "90", "135"], "channels": 1, "height": 16, "width": 16,
            "mean": 0.5, "std": 0.35}
    return SourceSplit(samples=samples(), num_samples=len(phases), fields=dict(FIELDS), dataset_info=info)


# The registry entry (in data_pipeline/datasets.py it names the module "data_pipeline.sources.stripes").
DATASET = DatasetSpec(__name__, "data_pipeline.sources.affine", AffineOptions, needs_source=False)
