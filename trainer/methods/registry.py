"""Name -> method, and the constructors the trainer calls: `build_model` from a run config, `build_method` for a
baseline around a given encoder."""

from __future__ import annotations

from torch import nn

from trainer.config import METHOD_NAMES, Config, MethodConfig
from trainer.errors import ConfigError
from trainer.methods.base import Method
from trainer.methods.byol import BYOL
from trainer.methods.cond_byol import ConditionalBYOL
from trainer.methods.equimod import EquiMod
from trainer.methods.sen import SEN
from trainer.methods.seq_jepa import SeqJEPA
from trainer.methods.sie import SIE
from trainer.methods.simclr import SimCLR
from trainer.methods.vicreg import VICReg
from trainer.methods.vicreg_traj import VICRegTraj
from trainer.model import build_encoder

BASELINES: dict[str, type[Method]] = {cls.name: cls for cls in (
    BYOL, ConditionalBYOL, EquiMod, SEN, SIE, SimCLR, VICReg, VICRegTraj)}


def method_class(name: str) -> type[Method]:
    """The class of the method `model.method` names (what it reads and has: `min_views`, `has_aggregate`)."""
    return SeqJEPA if name == "seq_jepa" else BASELINES[name]


def build_method(name: str, encoder: nn.Module, action_dim: int, cfg: MethodConfig,
                 action_proj_dim: int = 128) -> Method:
    """The baseline `name` around `encoder`; `action_dim` is the raw action width A, `action_proj_dim` the width
    of the learned action embedding (model.action_proj_dim)."""
    if name not in BASELINES:
        if name in METHOD_NAMES:  # seq_jepa
            raise ValueError(f"'{name}' takes the model.* settings: build it with build_model(config, ...)")
        raise ConfigError(f"unknown method '{name}'; valid: {', '.join(sorted(METHOD_NAMES))}")
    return BASELINES[name](encoder, action_dim, cfg, action_proj_dim)


def build_model(config: Config, action_dim: int, in_channels: int) -> Method:
    """The method a run's config describes, plain PyTorch (sharding comes later, in `trainer.training.parallel`)."""
    m = config.model
    encoder = build_encoder(m.encoder, in_channels=in_channels, cifar_stem=m.cifar_stem, width=m.conv_width,
                            channels_last=config.train.channels_last)
    if m.method == "seq_jepa":
        return SeqJEPA(encoder, action_dim, action_cond=m.action_cond,
                       learn_action_embedding=m.learn_action_embedding, action_proj_dim=m.action_proj_dim,
                       num_heads=m.num_heads, num_layers=m.num_layers, mlp_ratio=m.mlp_ratio, dropout=m.dropout,
                       pred_hidden=m.pred_hidden, use_ema=config.ema.enabled,
                       legacy_action_bn_zeros=m.legacy_action_bn_zeros,
                       legacy_absolute_raw_actions=m.legacy_absolute_raw_actions)
    return build_method(m.method, encoder, action_dim, config.method, m.action_proj_dim)
