"""bf16 autocast: BatchNorm's statistics stay float32 everywhere in the model, its activations stay bf16 where the
kernel takes a bf16 input with float32 state (CPU, CUDA); the loss is float32.

The reference is the float32 computation on the same (bf16-valued) input: what the project's BatchNorm did before it
passed bf16 inputs through, casting them in and the output out. Tolerances: running statistics and weight/bias
gradients to float32 rounding (rtol 1e-5; statistics kept in bf16 are off by up to 2e-2 here); the output and the input
gradient to one bf16 step (rtol 2^-7: the float32 result rounded to bf16).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainer.methods.seq_jepa import SeqJEPA
from trainer.model import batchnorm, build_encoder
from trainer.model.batchnorm import BatchNorm1d, BatchNorm2d

BF16_STEP = 2 ** -7  # bf16 keeps 8 significant bits: one step is at most 2^-7 of the value
FLOAT32_STATS = {"rtol": 1e-5, "atol": 1e-6}
ONE_BF16_STEP = {"rtol": BF16_STEP, "atol": 1e-6}

CASES = {  # name: (module, input shape, channels_last)
    "2d": (lambda: BatchNorm2d(16), (48, 16, 6, 6), False),
    "2d channels_last": (lambda: BatchNorm2d(16), (48, 16, 6, 6), True),
    "2d odd sizes": (lambda: BatchNorm2d(10), (33, 10, 5, 7), False),
    "1d (N, C)": (lambda: BatchNorm1d(40), (96, 40), False),
    "1d (N, C, L)": (lambda: BatchNorm1d(12), (16, 12, 9), False),
    "1d no affine": (lambda: BatchNorm1d(40, affine=False), (96, 40), False),
}


def _pair(make) -> tuple[nn.Module, nn.Module]:
    """The module under test and a plain float32 nn.BatchNorm reference with the same parameters and buffers."""
    torch.manual_seed(0)
    bn = make()
    with torch.no_grad():
        if bn.affine:
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_()
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
    ref = (nn.BatchNorm2d if isinstance(bn, nn.BatchNorm2d) else nn.BatchNorm1d)(bn.num_features, affine=bn.affine)
    ref.load_state_dict(bn.state_dict())
    return bn, ref


def _inputs(shape: tuple, channels_last: bool, seed: int) -> torch.Tensor:
    """bf16 activations far from zero mean (mean 5, std 3): where a bf16 accumulation of the statistics would show."""
    x = (torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 3 + 5).bfloat16()
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _step(bn: nn.Module, ref: nn.Module, x: torch.Tensor, grad: torch.Tensor):
    """One forward + backward of each: `bn` on the bf16 input under autocast, `ref` in float32 on the same values."""
    x_bn, x_ref = x.clone().requires_grad_(), x.float().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = bn(x_bn)
    out_ref = ref(x_ref)
    out.backward(grad)
    out_ref.backward(grad.float())
    return out, out_ref, x_bn.grad, x_ref.grad


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("case", list(CASES))
def test_bf16_input_gives_the_float32_statistics_and_the_rounded_float32_output(case, train):
    make, shape, channels_last = CASES[case]
    bn, ref = _pair(make)
    bn.train(train), ref.train(train)
    for seed in range(3):  # three steps: the running statistics accumulate
        x = _inputs(shape, channels_last, seed)
        grad = torch.randn(shape, generator=torch.Generator().manual_seed(100 + seed)).bfloat16()
        grad = grad.contiguous(memory_format=torch.channels_last) if channels_last else grad  # as x's, in a network
        out, out_ref, grad_x, grad_x_ref = _step(bn, ref, x, grad)
        assert out.dtype == torch.bfloat16  # passed through: no float32 copy in and out
        torch.testing.assert_close(out.float(), out_ref, **ONE_BF16_STEP)
        torch.testing.assert_close(grad_x.float(), grad_x_ref, **ONE_BF16_STEP)
    assert bn.running_mean.dtype == bn.running_var.dtype == torch.float32
    torch.testing.assert_close(bn.running_mean, ref.running_mean, **FLOAT32_STATS)
    torch.testing.assert_close(bn.running_var, ref.running_var, **FLOAT32_STATS)
    if bn.affine:
        assert bn.weight.grad.dtype == bn.bias.grad.dtype == torch.float32
        torch.testing.assert_close(bn.weight.grad, ref.weight.grad, **FLOAT32_STATS)
        torch.testing.assert_close(bn.bias.grad, ref.bias.grad, **FLOAT32_STATS)


def test_the_tolerance_tells_float32_statistics_from_bf16_ones():
    """The statistics' tolerance above is tight enough: a BatchNorm kept wholly in bf16 fails it."""
    _, ref = _pair(CASES["2d"][0])
    bn = nn.BatchNorm2d(16)
    bn.load_state_dict(ref.state_dict())
    bn.bfloat16()  # weight, bias and running statistics in bf16: the statistics are rounded to bf16
    for seed in range(3):
        x = _inputs(CASES["2d"][1], False, seed)
        bn(x), ref(x.float())
    with pytest.raises(AssertionError):
        torch.testing.assert_close(bn.running_var.float(), ref.running_var, **FLOAT32_STATS)


def test_without_a_mixed_kernel_the_input_is_cast_to_float32(monkeypatch):
    """The fallback (a device whose batch_norm wants one dtype): a float32 copy in, a float32 output, the float32
    reference's numbers exactly."""
    monkeypatch.setattr(batchnorm, "MIXED_KERNEL_DEVICES", frozenset())
    bn, ref = _pair(CASES["2d"][0])
    x = _inputs(CASES["2d"][1], False, 0)
    grad = torch.randn(CASES["2d"][1], generator=torch.Generator().manual_seed(1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = bn(x)
    assert out.dtype == torch.float32
    out_ref = ref(x.float())
    out.backward(grad), out_ref.backward(grad)
    assert torch.equal(out, out_ref) and torch.equal(bn.running_var, ref.running_var)
    assert torch.equal(bn.weight.grad, ref.weight.grad)


def test_float32_input_is_normalised_exactly_as_by_nn_batchnorm():
    bn, ref = _pair(CASES["2d"][0])
    x = _inputs(CASES["2d"][1], False, 0).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = bn(x)
    assert out.dtype == torch.float32 and torch.equal(out, ref(x))
    assert torch.equal(bn.running_mean, ref.running_mean) and torch.equal(bn.running_var, ref.running_var)


def test_batchnorm_state_stays_fp32_under_bf16_autocast():
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
    assert out_dtypes and set(out_dtypes) == {torch.bfloat16}  # every BatchNorm's input came from an autocast op
    assert all(t.dtype == torch.float32 for m in bns for t in (m.running_mean, m.running_var))
    out.loss.backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.encoder.parameters())


def test_fp32_batchnorm_keeps_state_dict_keys():
    assert set(BatchNorm2d(4).state_dict()) == set(torch.nn.BatchNorm2d(4).state_dict())
