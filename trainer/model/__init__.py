"""Building blocks in plain PyTorch (no distributed code): encoders, BatchNorm with fp32 stats, the seq-JEPA parts."""

from trainer.model.encoders import build_encoder, encoder_blocks

__all__ = ["build_encoder", "encoder_blocks"]
