"""BYOL (Grill et al. 2020): each view's prediction regresses the EMA target's projection of the other view."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from trainer.methods.base import Method, MethodOutput, detached, frozen_copy
from trainer.methods.catalog import BYOLSettings
from trainer.methods.heads import bn_projector, byol_predictor
from trainer.methods.losses import byol_loss


class BYOL(Method):
    name = "byol"

    def __init__(self, encoder: nn.Module, action_dim: int, settings: BYOLSettings, action_proj_dim: int = 128):
        super().__init__()
        widths = settings.projector_dims
        self.encoder = encoder
        self.projector = bn_projector(encoder.out_dim, widths)
        self.predictor = byol_predictor(widths[-1], widths[0], widths[-1])
        self.target_encoder = frozen_copy(encoder)
        self.target_projector = frozen_copy(self.projector)

    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.target_encoder, self.encoder), (self.target_projector, self.projector)]

    def shard_units(self) -> list[nn.Module]:
        return [self.projector, self.predictor, self.target_projector]

    def forward(self, views: torch.Tensor, rel_actions: torch.Tensor,
                abs_actions: Optional[torch.Tensor] = None) -> MethodOutput:
        x1, x2, _ = self.first_pair(views, rel_actions)
        z1, z2 = self.encoder(x1), self.encoder(x2)  # one call per view, as the authors
        p1, p2 = self.predictor(self.projector(z1)), self.predictor(self.projector(z2))
        t1, t2 = self.target(x1), self.target(x2)
        loss = byol_loss(p1.float(), t2) + byol_loss(p2.float(), t1)  # symmetric
        return MethodOutput(loss, z1, z2, logs=detached(prediction=loss))

    def target(self, x: torch.Tensor) -> torch.Tensor:
        """The EMA target's projection, detached (it runs in the module's mode, batch statistics in training)."""
        return self.target_pass(x)[1]

    @torch.no_grad()
    def target_pass(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The EMA target encoder's embedding and its projection (float32), both detached."""
        embedding = self.target_encoder(x)
        return embedding.detach(), self.target_projector(embedding).float().detach()
