"""SEN, contrastive variant (Park et al. 2022; docs/paper-and-original-code.md#sen): purely equivariant. The projection
of view 2 is predicted from the projection of view 1 and the action embedding, and told apart from the other samples'
projections by NT-Xent."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from trainer.methods.base import Method, MethodOutput, detached
from trainer.methods.catalog import SENSettings
from trainer.methods.gather import gather_rows
from trainer.methods.heads import bn_projector
from trainer.methods.losses import nt_xent
from trainer.model.components import action_input


class SEN(Method):
    name = "sen"

    def __init__(self, encoder: nn.Module, action_dim: int, settings: SENSettings, action_proj_dim: int = 128):
        super().__init__()
        widths = settings.projector_dims
        self.encoder = encoder
        self.projector = bn_projector(encoder.out_dim, widths)
        self.action_embedding = action_input(action_dim, action_proj_dim, settings.learn_action_embedding)
        self.predictor = bn_projector(self.action_embedding.out_dim + widths[-1], [widths[-1]])  # Linear(no bias) + BN
        self.temperature = settings.temperature

    def shard_units(self) -> list[nn.Module]:
        return [self.projector, self.predictor]

    def forward(self, views: torch.Tensor, rel_actions: torch.Tensor,
                abs_actions: Optional[torch.Tensor] = None) -> MethodOutput:
        z1, z2, action = self.encode_first_pair(views, rel_actions)
        y1, y2 = self.projector(z1), self.projector(z2)
        prediction = self.predictor(torch.cat([self.action_embedding(action), y1], dim=1))
        prediction, y2 = gather_rows(prediction.float(), y2.float())
        loss = nt_xent(prediction, y2, self.temperature)
        return MethodOutput(loss, z1, z2, logs=detached(nt_xent=loss))
