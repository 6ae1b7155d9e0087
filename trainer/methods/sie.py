"""SIE (Garrido et al. 2023; docs/paper-and-original-code.md#sie): the representation is split into an invariant half
and an equivariant half. The invariant projections of the two views are pulled together; the equivariant projection of
view 2 is predicted by a matrix that a linear hyper-network computes from the raw relative action. VICReg's variance and
covariance terms regularise the concatenated projections (and the prediction's variance)."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from trainer.methods.base import Method, MethodOutput, detached
from trainer.methods.catalog import SIESettings
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

    def __init__(self, encoder: nn.Module, action_dim: int, settings: SIESettings, action_proj_dim: int = 128):
        super().__init__()
        widths = settings.projector_dims
        self.encoder = encoder
        self.inv_dim = encoder.out_dim // 2  # the first half is invariant, the rest equivariant
        self.projector_inv = vicreg_projector(self.inv_dim, widths)
        self.projector_equi = vicreg_projector(encoder.out_dim - self.inv_dim, widths)
        self.predictor = HyperLinearPredictor(action_dim, widths[-1])
        self.inv_coeff, self.var_coeff, self.cov_coeff = settings.inv_coeff, settings.var_coeff, settings.cov_coeff
        self.equi_factor = settings.equi_factor

    def shard_units(self) -> list[nn.Module]:
        return [self.projector_inv, self.projector_equi, self.predictor]

    def forward(self, views: torch.Tensor, rel_actions: torch.Tensor,
                abs_actions: Optional[torch.Tensor] = None) -> MethodOutput:
        z1, z2, action = self.encode_first_pair(views, rel_actions)
        inv1, equi1 = self._project(z1)
        inv2, equi2 = self._project(z2)
        prediction = self.predictor(equi1, action)
        loss, terms = self._loss(*gather_rows(inv1, equi1, inv2, equi2, prediction.float()))
        return MethodOutput(loss, z1, z2, logs=detached(**terms))

    def _project(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inv, equi = z[:, :self.inv_dim], z[:, self.inv_dim:]
        return self.projector_inv(inv).float(), self.projector_equi(equi).float()

    def _loss(self, inv1: torch.Tensor, equi1: torch.Tensor, inv2: torch.Tensor, equi2: torch.Tensor,
              prediction: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss and its terms, on the global batch; variance and covariance see each view's
        [invariant | equivariant] projection."""
        invariance = F.mse_loss(inv1, inv2)
        equivariance = F.mse_loss(prediction, equi2)
        y1, y2 = torch.cat([inv1, equi1], dim=1), torch.cat([inv2, equi2], dim=1)
        variance = (variance_term(y1) + variance_term(y2)) / 2 + variance_term(prediction) / 2
        covariance = covariance_term(y1) + covariance_term(y2)
        loss = (self.inv_coeff * invariance + self.equi_factor * self.inv_coeff * equivariance
                + self.var_coeff * variance + self.cov_coeff * covariance)
        return loss, {"invariance": invariance, "equivariance": equivariance, "variance": variance,
                      "covariance": covariance}
