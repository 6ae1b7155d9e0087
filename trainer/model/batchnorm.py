"""BatchNorm whose statistics stay float32, also under `torch.autocast` (bf16).

Why: batch statistics over a large batch accumulate badly in bf16, and the running statistics of the
EMA target must not drift with precision. The subclasses keep nn.BatchNorm's parameters, buffers and
state-dict keys; only the forward is wrapped.

How: on CPU and CUDA, PyTorch's own batch_norm kernel takes a bf16/fp16 input with float32 weight, bias and
running buffers ("mixed type"): it accumulates the batch mean and variance in float32, keeps the running
statistics and the weight/bias gradients in float32, normalises in float32 and rounds only the output to the
input's dtype (aten/src/ATen/native/cpu/batch_norm_kernel.cpp and cuda/Normalization.cu, `opmath`/`acc_type`
float). There the input is passed as it is: the output stays bf16, equal to the float32 computation rounded
to bf16 (tests/unit/model/test_batchnorm.py), and no cast in and out costs a pass over the activations. Any
other device, dtype or state (e.g. parameters not float32) takes the float32 copy of the input, as before,
and returns float32; an fp32 input is normalised exactly as by nn.BatchNorm.
"""

from __future__ import annotations

import torch
from torch import nn

MIXED_KERNEL_DEVICES = frozenset({"cpu", "cuda"})  # where batch_norm takes a half input with float32 state
_HALF_DTYPES = (torch.bfloat16, torch.float16)


class _Float32BatchNorm:
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype in _HALF_DTYPES and x.device.type in MIXED_KERNEL_DEVICES and self._float32_state():
            return super().forward(x)  # statistics in float32, the output in x's dtype
        with torch.autocast(device_type=x.device.type, enabled=False):
            return super().forward(x.float())

    def _float32_state(self) -> bool:
        return all(t is None or t.dtype == torch.float32
                   for t in (self.weight, self.bias, self.running_mean, self.running_var))


class BatchNorm1d(_Float32BatchNorm, nn.BatchNorm1d):
    pass


class BatchNorm2d(_Float32BatchNorm, nn.BatchNorm2d):
    pass
