"""Projector and predictor MLPs with the layouts of the paper's baselines (docs/paper-and-original-code.md#baselines).

BatchNorm is trainer.model.batchnorm.BatchNorm1d: its statistics stay float32 under bf16 autocast.
"""

from __future__ import annotations

from torch import nn

from trainer.model.batchnorm import BatchNorm1d


def _hidden_layers(in_dim: int, widths: list[int], bias: bool) -> tuple[list[nn.Module], int]:
    """Linear -> BN -> ReLU per width; returns the layers and the last width."""
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Linear(in_dim, width, bias=bias), BatchNorm1d(width), nn.ReLU(inplace=True)]
        in_dim = width
    return layers, in_dim


def bn_projector(in_dim: int, dims: list[int]) -> nn.Sequential:
    """SimCLR / BYOL / SEN / EquiMod layout: bias-free Linear-BN-ReLU hidden layers, then a bias-free Linear and
    a BN without affine parameters. With one width it is the SEN / EquiMod predictor: Linear(no bias) + BN."""
    layers, last = _hidden_layers(in_dim, dims[:-1], bias=False)
    return nn.Sequential(*layers, nn.Linear(last, dims[-1], bias=False), BatchNorm1d(dims[-1], affine=False))


def vicreg_projector(in_dim: int, dims: list[int]) -> nn.Sequential:
    """VICReg / SIE layout: Linear(bias)-BN-ReLU hidden layers, then a bias-free Linear with no BN."""
    layers, last = _hidden_layers(in_dim, dims[:-1], bias=True)
    return nn.Sequential(*layers, nn.Linear(last, dims[-1], bias=False))


def byol_predictor(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    """BYOL predictor: Linear(no bias)-BN-ReLU, then a Linear with bias."""
    layers, last = _hidden_layers(in_dim, [hidden], bias=False)
    return nn.Sequential(*layers, nn.Linear(last, out_dim))
