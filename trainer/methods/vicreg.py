"""VICReg (Bardes et al. 2022): invariance between the two views' projections, with variance and covariance
regularisers on the global batch; the action is not used."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from trainer.methods.base import Method, MethodOutput, detached
from trainer.methods.catalog import VICRegSettings
from trainer.methods.gather import gather_rows
from trainer.methods.heads import vicreg_projector
from trainer.methods.losses import vicreg_terms


class VICReg(Method):
    name = "vicreg"

    def __init__(self, encoder: nn.Module, action_dim: int, settings: VICRegSettings, action_proj_dim: int = 128):
        super().__init__()
        self.encoder = encoder
        self.projector = vicreg_projector(encoder.out_dim, settings.projector_dims)
        self.inv_coeff, self.var_coeff, self.cov_coeff = settings.inv_coeff, settings.var_coeff, settings.cov_coeff

    def shard_units(self) -> list[nn.Module]:
        return [self.projector]

    def forward(self, views: torch.Tensor, rel_actions: torch.Tensor,
                abs_actions: Optional[torch.Tensor] = None) -> MethodOutput:
        z1, z2, _ = self.encode_first_pair(views, rel_actions)
        y1, y2 = gather_rows(self.projector(z1).float(), self.projector(z2).float())
        invariance, variance, covariance = vicreg_terms(y1, y2)
        loss = self.inv_coeff * invariance + self.var_coeff * variance + self.cov_coeff * covariance
        return MethodOutput(loss, z1, z2, logs=detached(invariance=invariance, variance=variance,
                                                        covariance=covariance))
