"""Encoders: ResNet-18 matches torchvision (names, init, sizes); the convnet has the same interface."""

from __future__ import annotations

import pytest
import torch

from trainer.model import build_encoder, encoder_blocks
from trainer.model.resnet import BasicBlock


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_resnet18_parameter_counts_match_spec():
    assert _count(build_encoder("resnet18", in_channels=3)) == 11_176_512
    assert _count(build_encoder("resnet18", in_channels=3, cifar_stem=True)) == 11_168_832


def test_resnet_state_dict_uses_torchvision_names():
    keys = set(build_encoder("resnet18", in_channels=3).state_dict())
    for key in ("conv1.weight", "bn1.running_mean", "bn1.num_batches_tracked", "layer1.0.conv1.weight",
                "layer1.1.bn2.bias", "layer2.0.downsample.0.weight", "layer2.0.downsample.1.running_var",
                "layer4.1.conv2.weight"):
        assert key in keys, key
    assert not any(k.startswith("fc.") for k in keys)  # fc is an Identity: the output is the pooled feature
    assert "layer1.0.downsample.0.weight" not in keys  # layer1 keeps its shape: no projection shortcut


def test_zero_init_residual():
    encoder = build_encoder("resnet18", in_channels=3)
    blocks = [m for m in encoder.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 8
    for block in blocks:
        assert torch.all(block.bn2.weight == 0) and torch.all(block.bn1.weight == 1)
        assert torch.all(block.bn2.bias == 0)


def test_cifar_stem_conv_keeps_pytorch_default_init_like_the_authors_replacement():
    """Their fresh nn.Conv2d(3, 64, 3, 1, 1): uniform in +-1/sqrt(fan_in), std ~0.111 for fan_in 27 (torchvision's
    Kaiming-normal fan-out init of the other convs would give ~0.059)."""
    torch.manual_seed(0)
    stem = build_encoder("resnet18", in_channels=3, cifar_stem=True).conv1.weight
    assert stem.shape == (64, 3, 3, 3)
    bound = 27 ** -0.5
    assert stem.abs().max() <= bound and abs(stem.std().item() - bound / 3 ** 0.5) < 0.01
    standard = build_encoder("resnet18", in_channels=3).conv1.weight  # Kaiming normal, fan-out 64 x 7 x 7
    assert abs(standard.std().item() - (2 / (64 * 49)) ** 0.5) < 0.002


@pytest.mark.parametrize("cifar_stem,size", [(False, 64), (True, 16)])
def test_resnet_outputs_512_features(cifar_stem, size):
    encoder = build_encoder("resnet18", in_channels=1, cifar_stem=cifar_stem)
    assert encoder.out_dim == 512
    assert encoder(torch.randn(2, 1, size, size)).shape == (2, 512)


def test_convnet_interface_and_blocks():
    encoder = build_encoder("convnet", in_channels=3, width=8)
    assert encoder.out_dim == 64
    assert encoder(torch.randn(2, 3, 16, 16)).shape == (2, 64)
    assert len(encoder_blocks(encoder)) == 4
    assert len(encoder_blocks(build_encoder("resnet18", in_channels=3))) == 8


def test_unknown_encoder_is_rejected():
    with pytest.raises(ValueError, match="unknown encoder"):
        build_encoder("vit", in_channels=3)


@pytest.mark.parametrize("name", ["resnet18", "convnet"])
def test_channels_last_changes_layout_not_results(name):
    torch.manual_seed(0)
    plain = build_encoder(name, in_channels=3, cifar_stem=True)
    nhwc = build_encoder(name, in_channels=3, cifar_stem=True, channels_last=True)
    nhwc.load_state_dict(plain.state_dict())
    layouts = []
    first_conv = next(m for m in nhwc.modules() if isinstance(m, torch.nn.Conv2d))
    first_conv.register_forward_hook(
        lambda _m, _i, out: layouts.append(out.is_contiguous(memory_format=torch.channels_last)))
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(nhwc(x), plain(x), rtol=1e-4, atol=1e-5)
    assert layouts == [True]  # the convolutions really ran in NHWC
    # Weights stay contiguous (FSDP2 shards only contiguous parameters).
    assert all(p.is_contiguous() for p in nhwc.parameters())
