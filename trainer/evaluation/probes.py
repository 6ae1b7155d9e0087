"""Probes trained on frozen, cached features: the paper's offline evaluation protocol
(docs/paper-and-original-code.md#released-offline-evaluation, #original-aggregate-evaluation, #probe-hyper-parameters).

Features are standardised with the train split's mean and standard deviation first: an invertible
affine map, so a probe can express exactly what it could before, but Adam converges in far fewer
epochs on features whose scales differ by orders of magnitude.

The K classifiers (or linear regressors) of one call (one per inference length M_val) are K
independent probes trained side by side as one batched module: their parameters are disjoint and Adam's state is per
parameter, so this equals K separate runs that share the minibatch order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainer.config import EvalConfig


def standardise(train: torch.Tensor, val: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale both splits with the train split's statistics (over the sample axis, the second to last)."""
    mean, std = train.mean(-2, keepdim=True), train.std(-2, keepdim=True).clamp(min=1e-6)
    return (train - mean) / std, (val - mean) / std


class BatchedLinear(nn.Module):
    """K independent linear heads, one per feature set: (K, B, D) -> (K, B, C)."""

    def __init__(self, heads: int, in_dim: int, out_dim: int, generator: torch.Generator):
        super().__init__()
        bound = in_dim ** -0.5  # nn.Linear's default initialisation range
        self.weight = nn.Parameter((torch.rand(heads, in_dim, out_dim, generator=generator) * 2 - 1) * bound)
        self.bias = nn.Parameter((torch.rand(heads, 1, out_dim, generator=generator) * 2 - 1) * bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


def mlp_regressor(in_dim: int, hidden: int, out_dim: int, generator: torch.Generator) -> nn.Sequential:
    """The paper's equivariance probe: two hidden ReLU layers (docs/paper-and-original-code.md#online-probes)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(2 ** 62, (1,), generator=generator)))
        return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                             nn.Linear(hidden, out_dim))


def _fit(module: nn.Module, loss_of_batch, num_samples: int, cfg: EvalConfig, generator: torch.Generator,
         progress=None) -> None:
    """Adam, no weight decay, `cfg.epochs` shuffled passes in minibatches of `cfg.batch_size`; `progress` (a
    tqdm bar, or None) advances by one per epoch."""
    optimizer = torch.optim.Adam(module.parameters(), lr=cfg.lr)
    module.train()
    for _ in range(cfg.epochs):
        for index in torch.randperm(num_samples, generator=generator).split(cfg.batch_size):
            loss = loss_of_batch(index)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if progress is not None:
            progress.update(1)
    module.eval()


def _sums_of_squares(pred: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per output dimension (SSE, total sum of squares) over the sample axis (the second to last)."""
    pred, y = pred.double(), y.double()
    return ((pred - y) ** 2).sum(-2), ((y - y.mean(-2, keepdim=True)) ** 2).sum(-2)


def fit_classifiers(train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor,
                    num_classes: int, cfg: EvalConfig, generator: torch.Generator, progress=None) -> torch.Tensor:
    """K linear classifiers on K feature sets (K, N, D); returns the K val top-1 accuracies in %."""
    train_x, val_x = standardise(train_x, val_x)
    heads = BatchedLinear(train_x.shape[0], train_x.shape[-1], num_classes, generator)

    def loss_of_batch(index: torch.Tensor) -> torch.Tensor:
        logits = heads(train_x[:, index])  # (K, b, C); the sum over heads keeps their gradients apart
        return F.cross_entropy(logits.flatten(0, 1), train_y[index].repeat(len(logits)), reduction="sum") / len(index)

    _fit(heads, loss_of_batch, train_x.shape[1], cfg, generator, progress)
    with torch.no_grad():
        return 100.0 * (heads(val_x).argmax(-1) == val_y).double().mean(-1)


def fit_regressor(train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor,
                  cfg: EvalConfig, generator: torch.Generator, progress=None) -> tuple[torch.Tensor, torch.Tensor]:
    """An MLP regressor (N, D) -> (N, A); returns per-dimension (SSE, total sum of squares) on val."""
    train_x, val_x = standardise(train_x, val_x)
    net = mlp_regressor(train_x.shape[-1], cfg.hidden, train_y.shape[-1], generator)
    _fit(net, lambda index: F.mse_loss(net(train_x[index]), train_y[index]), len(train_x), cfg, generator, progress)
    with torch.no_grad():
        return _sums_of_squares(net(val_x), val_y)


def fit_linear_regressors(train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor,
                          cfg: EvalConfig, generator: torch.Generator,
                          progress=None) -> tuple[torch.Tensor, torch.Tensor]:
    """K linear regressors, features (K, N, D) -> targets (K, N, A), trained side by side; returns per head and
    dimension (SSE, total sum of squares) on val, each (K, A).

    The targets are standardised with the train split's statistics too (undone before scoring): every
    dimension then weighs the same in the loss and no head has to learn a large intercept first.
    """
    train_x, val_x = standardise(train_x, val_x)
    mean, std = train_y.mean(-2, keepdim=True), train_y.std(-2, keepdim=True).clamp(min=1e-6)
    target = (train_y - mean) / std
    heads = BatchedLinear(train_x.shape[0], train_x.shape[-1], train_y.shape[-1], generator)

    def loss_of_batch(index: torch.Tensor) -> torch.Tensor:  # the sum over heads keeps their gradients apart
        return F.mse_loss(heads(train_x[:, index]), target[:, index], reduction="none").mean((1, 2)).sum()

    _fit(heads, loss_of_batch, train_x.shape[1], cfg, generator, progress)
    with torch.no_grad():
        return _sums_of_squares(heads(val_x) * std + mean, val_y)
