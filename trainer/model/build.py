"""The model a run's config describes (plain PyTorch; sharding comes later, in `trainer.training.parallel`)."""

from __future__ import annotations

from trainer.config import Config
from trainer.model.encoders import build_encoder
from trainer.model.seq_jepa import SeqJEPA


def build_model(config: Config, action_dim: int, in_channels: int) -> SeqJEPA:
    m = config.model
    encoder = build_encoder(m.encoder, in_channels=in_channels, cifar_stem=m.cifar_stem, width=m.conv_width,
                            channels_last=config.train.channels_last)
    return SeqJEPA(encoder, action_dim, action_cond=m.action_cond, learn_action_embedding=m.learn_action_embedding,
                   action_proj_dim=m.action_proj_dim, num_heads=m.num_heads, num_layers=m.num_layers,
                   mlp_ratio=m.mlp_ratio, dropout=m.dropout, pred_hidden=m.pred_hidden, use_ema=config.ema.enabled)
