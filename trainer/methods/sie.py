"""SIE (Garrido et al. 2023; spec §5): the representation is split into an invariant half and an equivariant
half. The invariant projections of the two views are pulled together; the equivariant projection of view 2 is
predicted by a matrix that a linear hyper-network computes from the raw relative action. VICReg's variance and
covariance terms regularise the concatenated projections (and the prediction's variance)."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from trainer.config import MethodConfig
from trainer.methods.base import Method, MethodOutput, projector_widths
from trainer.methods.gather import gather_rows
from trainer.methods.heads import vicreg_projector
from trainer.methods.losses import covariance_term, variance_term


class HyperLinearPredictor(nn.Module):
    """y -> W(a) y with W(a) = hypernet(a).view(d, d) and hypernet a bias-free Linear(A -> d*d).

    W(a) is never built per sample (that is B*d*d floats, 2 GiB at B=512, d=1024): the hyper-network is linear,
    so W(a) y = sum_k a_k (H_k y) with H_k the k-th column of its weight seen as a d x d matrix.
    """

    def __init__(self, action_dim: int, width: int):
        super().__init__()
        self.width = width
        self.hypernet = nn.Linear(action_dim, width * width, bias=False)

    def forward(self, y: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        d, A = self.width, action.shape[1]
        # weight (d_out*d_in, A) -> (d_in, d_out*A): one matmul applies every H_k to y.
        per_action = y @ self.hypernet.weight.view(d, d, A).permute(1, 0, 2).reshape(d, d * A)
        return (per_action.view(-1, d, A) * action.unsqueeze(1)).sum(dim=-1)


class SIE(Method):
    name = "sie"
    paper_projector = (1024, 1024, 1024)

    def __init__(self, encoder: nn.Module, action_dim: int, cfg: MethodConfig, action_proj_dim: int = 128):
        super().__init__()
        widths = projector_widths(cfg, self.paper_projector)
        self.encoder = encoder
        self.inv_dim = encoder.out_dim // 2  # the first half is invariant, the rest equivariant
        self.projector_inv = vicreg_projector(self.inv_dim, widths)
        self.projector_equi = vicreg_projector(encoder.out_dim - self.inv_dim, widths)
        self.predictor = HyperLinearPredictor(action_dim, widths[-1])
        self.inv_coeff, self.var_coeff, self.cov_coeff = cfg.inv_coeff, cfg.var_coeff, cfg.cov_coeff
        self.equi_factor = cfg.equi_factor

    def shard_units(self) -> list[nn.Module]:
        return [self.projector_inv, self.projector_equi, self.predictor]

    def forward(self, views: torch.Tensor, rel_actions: torch.Tensor,
                abs_actions: Optional[torch.Tensor] = None) -> MethodOutput:
        z1, z2, action = self.encode_first_pair(views, rel_actions)
        inv1, equi1 = self._project(z1)
        inv2, equi2 = self._project(z2)
        prediction = self.predictor(equi1, action)
        loss = self._loss(*gather_rows(inv1, equi1, inv2, equi2, prediction.float()))
        return MethodOutput(loss, z1, z2)

    def _project(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inv, equi = z[:, :self.inv_dim], z[:, self.inv_dim:]
        return self.projector_inv(inv).float(), self.projector_equi(equi).float()

    def _loss(self, inv1: torch.Tensor, equi1: torch.Tensor, inv2: torch.Tensor, equi2: torch.Tensor,
              prediction: torch.Tensor) -> torch.Tensor:
        """On the global batch; variance and covariance see each view's [invariant | equivariant] projection."""
        invariance = F.mse_loss(inv1, inv2)
        equivariance = F.mse_loss(prediction, equi2)
        y1, y2 = torch.cat([inv1, equi1], dim=1), torch.cat([inv2, equi2], dim=1)
        variance = (variance_term(y1) + variance_term(y2)) / 2 + variance_term(prediction) / 2
        covariance = covariance_term(y1) + covariance_term(y2)
        return (self.inv_coeff * invariance + self.equi_factor * self.inv_coeff * equivariance
                + self.var_coeff * variance + self.cov_coeff * covariance)
