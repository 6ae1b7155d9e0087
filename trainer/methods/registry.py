"""Name -> method class, and the one constructor the trainer calls."""

from __future__ import annotations

from torch import nn

from trainer.errors import ConfigError
from trainer.methods.base import Method
from trainer.methods.byol import BYOL
from trainer.methods.cond_byol import ConditionalBYOL
from trainer.methods.config import METHOD_NAMES, MethodConfig
from trainer.methods.equimod import EquiMod
from trainer.methods.sen import SEN
from trainer.methods.sie import SIE
from trainer.methods.simclr import SimCLR
from trainer.methods.vicreg import VICReg
from trainer.methods.vicreg_traj import VICRegTraj

METHODS: dict[str, type[Method]] = {cls.name: cls for cls in (
    BYOL, ConditionalBYOL, EquiMod, SEN, SIE, SimCLR, VICReg, VICRegTraj)}


def build_method(name: str, encoder: nn.Module, action_dim: int, cfg: MethodConfig,
                 action_proj_dim: int = 128) -> Method:
    """The method `name` around `encoder`; `action_dim` is the raw action width A, `action_proj_dim` the width
    of the learned action embedding (model.action_proj_dim)."""
    if name not in METHODS:
        if name in METHOD_NAMES:  # seq_jepa
            raise ValueError(f"'{name}' is built by trainer.model.SeqJEPA, not by build_method")
        raise ConfigError(f"unknown method '{name}'; valid: {', '.join(METHOD_NAMES)}")
    return METHODS[name](encoder, action_dim, cfg, action_proj_dim)
