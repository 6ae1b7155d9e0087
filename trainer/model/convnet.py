"""A small 4-block CNN with the encoder interface of ResNet18, for CPU-scale runs.

Each block (conv3x3-BN-ReLU) is its own module in `blocks`, so a sharding wrapper can wrap it alone.
"""

from __future__ import annotations

import torch
from torch import nn

from trainer.model.batchnorm import BatchNorm2d


def conv_block(in_ch: int, out_ch: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False),
                         BatchNorm2d(out_ch), nn.ReLU(inplace=True))


class ConvNet(nn.Module):
    def __init__(self, in_channels: int = 3, width: int = 32, channels_last: bool = False):
        super().__init__()
        self.channels_last = channels_last  # NHWC convolutions, see `build_encoder`
        widths = [width, 2 * width, 4 * width, 8 * width]
        strides = [1, 2, 2, 2]
        ins = [in_channels] + widths[:-1]
        self.blocks = nn.Sequential(*(conv_block(i, o, s) for i, o, s in zip(ins, widths, strides)))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_dim = widths[-1]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return torch.flatten(self.pool(self.blocks(x)), 1)
