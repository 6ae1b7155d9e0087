"""The model a run's config describes (`build_model`), or one method around a given encoder (`build_method`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn

from trainer.methods.base import Method
from trainer.methods.catalog import method_entry
from trainer.model import build_encoder

if TYPE_CHECKING:
    from trainer.config import Config


def build_model(config: Config, action_dim: int, in_channels: int) -> Method:
    """The method a run's config describes, plain PyTorch (sharding comes later, in `trainer.training.parallel`)."""
    m = config.model
    encoder = build_encoder(m.encoder, in_channels=in_channels, cifar_stem=m.cifar_stem, width=m.conv_width,
                            channels_last=config.train.channels_last)
    return method_entry(m.method).load().from_config(encoder, action_dim, config)


def build_method(name: str, encoder: nn.Module, action_dim: int, settings: Any = None,
                 action_proj_dim: int = 128) -> Method:
    """The method `name` around `encoder` with its settings (None: its defaults, trainer/methods/catalog.py);
    `action_dim` is the raw action width A, `action_proj_dim` the width of a learned action embedding."""
    entry = method_entry(name)
    return entry.load()(encoder, action_dim, settings if settings is not None else entry.settings(), action_proj_dim)
