"""Conditional BYOL (docs/paper-and-original-code.md#conditional-byol): predict the EMA target's projection of view 2
from view 1's projection and the learned embedding of the action 1 -> 2. One direction only, as in the authors' code.
BYOL's encoder, projector and EMA target, with a predictor that also reads the action.

As the authors': only view 1 goes through the online encoder (its BatchNorm statistics move once per step), and
the pair probe reads the online z1 beside the TARGET encoder's z2, the embedding the target pass computes anyway."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from trainer.methods.base import MethodOutput, detached
from trainer.methods.byol import BYOL
from trainer.methods.catalog import BYOLSettings
from trainer.methods.heads import byol_predictor
from trainer.methods.losses import byol_loss
from trainer.model.components import ActionEmbedding


class ConditionalBYOL(BYOL):
    name = "cond_byol"

    def __init__(self, encoder: nn.Module, action_dim: int, settings: BYOLSettings, action_proj_dim: int = 128):
        super().__init__(encoder, action_dim, settings, action_proj_dim)
        widths = settings.projector_dims
        self.action_embedding = ActionEmbedding(action_dim, action_proj_dim)
        self.predictor = byol_predictor(action_proj_dim + widths[-1], widths[0], widths[-1])  # replaces BYOL's

    def forward(self, views: torch.Tensor, rel_actions: torch.Tensor,
                abs_actions: Optional[torch.Tensor] = None) -> MethodOutput:
        x1, x2, action = self.first_pair(views, rel_actions)
        z1 = self.encoder(x1)
        prediction = self.predictor(torch.cat([self.action_embedding(action), self.projector(z1)], dim=1))
        z2, target = self.target_pass(x2)
        loss = byol_loss(prediction.float(), target)
        return MethodOutput(loss, z1, z2, logs=detached(prediction=loss))
