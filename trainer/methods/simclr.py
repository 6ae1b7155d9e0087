"""SimCLR (Chen et al. 2020): invariance by contrast between the two views; the action is not used."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from trainer.methods.base import Method, MethodOutput, detached
from trainer.methods.catalog import SimCLRSettings
from trainer.methods.gather import gather_rows
from trainer.methods.heads import bn_projector
from trainer.methods.losses import nt_xent


class SimCLR(Method):
    name = "simclr"

    def __init__(self, encoder: nn.Module, action_dim: int, settings: SimCLRSettings, action_proj_dim: int = 128):
        super().__init__()
        self.encoder = encoder
        self.projector = bn_projector(encoder.out_dim, settings.projector_dims)
        self.temperature = settings.temperature

    def shard_units(self) -> list[nn.Module]:
        return [self.projector]

    def forward(self, views: torch.Tensor, rel_actions: torch.Tensor,
                abs_actions: Optional[torch.Tensor] = None) -> MethodOutput:
        z1, z2, _ = self.encode_first_pair(views, rel_actions)
        y1, y2 = gather_rows(self.projector(z1).float(), self.projector(z2).float())
        loss = nt_xent(y1, y2, self.temperature)
        return MethodOutput(loss, z1, z2, logs=detached(nt_xent=loss))
