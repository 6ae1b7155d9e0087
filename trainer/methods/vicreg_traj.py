"""VICReg-Traj (docs/paper-and-original-code.md#vicreg-traj): VICReg between views 0 and 1, plus a trajectory term
asking the steps 0 -> 1 and 1 -> 2 in projection space to continue in the same direction. Uses three consecutive views,
no actions."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from trainer.methods.base import MethodOutput, detached
from trainer.methods.catalog import VICRegTrajSettings
from trainer.methods.gather import gather_rows
from trainer.methods.losses import trajectory_term, vicreg_terms
from trainer.methods.vicreg import VICReg


class VICRegTraj(VICReg):
    name = "vicreg_traj"  # three consecutive views (its catalogue entry)

    def __init__(self, encoder: nn.Module, action_dim: int, settings: VICRegTrajSettings, action_proj_dim: int = 128):
        super().__init__(encoder, action_dim, settings, action_proj_dim)
        self.traj_alpha = settings.traj_alpha

    def forward(self, views: torch.Tensor, rel_actions: torch.Tensor,
                abs_actions: Optional[torch.Tensor] = None) -> MethodOutput:
        self.require_views(views)
        B = views.shape[0]
        # The three views go through the encoder and the projector in one call each (shared BN statistics),
        # as in the authors' code.
        z = self.encoder(views[:, :3].flatten(0, 1))
        y = self.projector(z).float().view(B, 3, -1)
        y_l, y_c, y_r = gather_rows(y[:, 0], y[:, 1], y[:, 2])
        invariance, variance, covariance = vicreg_terms(y_l, y_c)
        trajectory = trajectory_term(y_l, y_c, y_r)
        loss = (self.inv_coeff * invariance + self.var_coeff * variance + self.cov_coeff * covariance
                + self.traj_alpha * trajectory)
        z = z.view(B, 3, -1)
        return MethodOutput(loss, z[:, 0], z[:, 1], logs=detached(invariance=invariance, variance=variance,
                                                                  covariance=covariance, trajectory=trajectory))
