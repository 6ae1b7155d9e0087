"""SimCLR-EquiMod (Devillers & Lefort 2023; docs/paper-and-original-code.md#equimod): an invariant SimCLR head plus an
equivariant head whose projection of view 2 is predicted from view 1's and the action embedding, both trained with
NT-Xent."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from trainer.methods.base import Method, MethodOutput, detached
from trainer.methods.catalog import EquiModSettings
from trainer.methods.gather import gather_rows
from trainer.methods.heads import bn_projector
from trainer.methods.losses import nt_xent
from trainer.model.components import action_input


class EquiMod(Method):
    name = "equimod"

    def __init__(self, encoder: nn.Module, action_dim: int, settings: EquiModSettings, action_proj_dim: int = 128):
        super().__init__()
        widths = settings.projector_dims
        self.encoder = encoder
        self.projector_inv = bn_projector(encoder.out_dim, widths)
        self.projector_equi = bn_projector(encoder.out_dim, widths)
        self.action_embedding = action_input(action_dim, action_proj_dim, settings.learn_action_embedding)
        self.predictor = bn_projector(self.action_embedding.out_dim + widths[-1], [widths[-1]])  # Linear(no bias) + BN
        self.temperature = settings.temperature
        self.equi_factor = settings.equi_factor

    def shard_units(self) -> list[nn.Module]:
        return [self.projector_inv, self.projector_equi, self.predictor]

    def forward(self, views: torch.Tensor, rel_actions: torch.Tensor,
                abs_actions: Optional[torch.Tensor] = None) -> MethodOutput:
        z1, z2, action = self.encode_first_pair(views, rel_actions)
        prediction = self.predictor(torch.cat([self.action_embedding(action), self.projector_equi(z1)], dim=1))
        inv1, inv2, prediction, equi2 = gather_rows(self.projector_inv(z1).float(), self.projector_inv(z2).float(),
                                                    prediction.float(), self.projector_equi(z2).float())
        equivariant, invariant = nt_xent(prediction, equi2, self.temperature), nt_xent(inv1, inv2, self.temperature)
        loss = self.equi_factor * equivariant + invariant
        return MethodOutput(loss, z1, z2, logs=detached(invariant=invariant, equivariant=equivariant))
