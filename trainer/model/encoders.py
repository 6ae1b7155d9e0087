"""Encoder factory, and the per-block layout that sharding wrappers use."""

from __future__ import annotations

from torch import nn

from trainer.model.convnet import ConvNet
from trainer.model.resnet import BasicBlock, ResNet18


def build_encoder(name: str, in_channels: int, cifar_stem: bool = False, width: int = 32) -> nn.Module:
    """An image encoder (N, C, H, W) -> (N, out_dim); `cifar_stem` is for resnet18, `width` for convnet."""
    if name == "resnet18":
        return ResNet18(in_channels=in_channels, cifar_stem=cifar_stem)
    if name == "convnet":
        return ConvNet(in_channels=in_channels, width=width)
    raise ValueError(f"unknown encoder '{name}' (expected 'resnet18' or 'convnet')")


def encoder_blocks(encoder: nn.Module) -> list[nn.Module]:
    """The modules to wrap one by one when sharding: ResNet BasicBlocks or ConvNet blocks."""
    if isinstance(encoder, ResNet18):
        return [m for m in encoder.modules() if isinstance(m, BasicBlock)]
    if isinstance(encoder, ConvNet):
        return list(encoder.blocks)
    raise TypeError(f"no block layout known for {type(encoder).__name__}")
