"""Conditional BYOL (spec §5): predict the EMA target's projection of view 2 from view 1's projection and the
learned embedding of the action 1 -> 2. One direction only, as in the authors' code."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from trainer.config import MethodConfig
from trainer.methods.base import Method, MethodOutput, frozen_copy, projector_widths
from trainer.methods.heads import bn_projector, byol_predictor
from trainer.methods.losses import byol_loss
from trainer.model.components import ActionEmbedding


class ConditionalBYOL(Method):
    name = "cond_byol"
    paper_projector = (2048, 128)

    def __init__(self, encoder: nn.Module, action_dim: int, cfg: MethodConfig, action_proj_dim: int = 128):
        super().__init__()
        widths = projector_widths(cfg, self.paper_projector)
        self.encoder = encoder
        self.projector = bn_projector(encoder.out_dim, widths)
        self.action_embedding = ActionEmbedding(action_dim, action_proj_dim)
        self.predictor = byol_predictor(action_proj_dim + widths[-1], widths[0], widths[-1])
        self.target_encoder = frozen_copy(encoder)
        self.target_projector = frozen_copy(self.projector)

    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.target_encoder, self.encoder), (self.target_projector, self.projector)]

    def shard_units(self) -> list[nn.Module]:
        return [self.projector, self.predictor, self.target_projector]

    def forward(self, views: torch.Tensor, rel_actions: torch.Tensor,
                abs_actions: Optional[torch.Tensor] = None) -> MethodOutput:
        x1, x2, action = self.first_pair(views, rel_actions)
        z1 = self.encoder(x1)
        y1 = self.projector(z1)
        prediction = self.predictor(torch.cat([self.action_embedding(action), y1], dim=1))
        with torch.no_grad():
            target = self.target_projector(self.target_encoder(x2)).float().detach()
            # View 2 through the online encoder for the pair probe only; the loss never sees it, and in training
            # it only adds a BN running-statistics update. (The authors returned the target's embedding here.)
            z2 = self.encoder(x2)
        return MethodOutput(byol_loss(prediction.float(), target), z1, z2)
