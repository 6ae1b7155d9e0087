"""BatchNorm that always computes in float32, also under `torch.autocast` (bf16).

Why: batch statistics over a large batch accumulate badly in bf16, and the running statistics of the
EMA target must not drift with precision. The subclasses keep nn.BatchNorm's parameters, buffers and
state-dict keys; only the forward is wrapped. The output is float32; the next autocast op casts it down.
"""

from __future__ import annotations

import torch
from torch import nn


class _Float32BatchNorm:
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            return super().forward(x.float())


class BatchNorm1d(_Float32BatchNorm, nn.BatchNorm1d):
    pass


class BatchNorm2d(_Float32BatchNorm, nn.BatchNorm2d):
    pass
