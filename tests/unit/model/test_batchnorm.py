"""bf16 autocast: BatchNorm computes in float32 everywhere in the model; the loss is float32."""

from __future__ import annotations

import torch

from trainer.methods.seq_jepa import SeqJEPA
from trainer.model import build_encoder
from trainer.model.batchnorm import BatchNorm1d, BatchNorm2d


def test_batchnorm_stays_fp32_under_bf16_autocast():
    torch.manual_seed(0)
    model = SeqJEPA(build_encoder("convnet", in_channels=1, width=4), 3, action_proj_dim=8, num_layers=1,
                    pred_hidden=16)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert bns and all(isinstance(m, (BatchNorm1d, BatchNorm2d)) for m in bns)
    out_dtypes = []
    for m in bns:
        m.register_forward_hook(lambda _m, _i, out: out_dtypes.append(out.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(4, 3, 1, 16, 16), torch.randn(4, 2, 3))
    assert out.loss.dtype == torch.float32
    assert out_dtypes and set(out_dtypes) == {torch.float32}
    out.loss.backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.encoder.parameters())


def test_fp32_batchnorm_keeps_state_dict_keys():
    assert set(BatchNorm2d(4).state_dict()) == set(torch.nn.BatchNorm2d(4).state_dict())
