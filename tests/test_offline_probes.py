"""Offline probes on cached features: each probe learns what its features hold, and nothing else."""

from __future__ import annotations

import torch

from trainer.config import EvalConfig
from trainer.offline_probes import fit_classifiers, fit_regressor, standardise
from trainer.probes import summarise_r2

CFG = EvalConfig(epochs=20, batch_size=64, hidden=64, lr=3e-3)


def test_standardise_uses_train_statistics_for_both_splits():
    train, val = torch.randn(500, 3) * 10 + 5, torch.randn(100, 3) * 10 + 5
    t, v = standardise(train, val)
    assert torch.allclose(t.mean(0), torch.zeros(3), atol=1e-5) and torch.allclose(t.std(0), torch.ones(3), atol=1e-5)
    assert torch.allclose(v, (val - train.mean(0)) / train.std(0), atol=1e-5)


def test_each_classifier_learns_only_from_its_own_features():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (800,), generator=g)
    informative = torch.nn.functional.one_hot(labels, 4).float() * 3 + torch.randn(800, 4, generator=g)
    noise = torch.randn(800, 4, generator=g)
    feats = torch.stack([informative, noise])  # (K=2, N, D)
    acc = fit_classifiers(feats[:, :600], labels[:600], feats[:, 600:], labels[600:], 4, CFG,
                          torch.Generator().manual_seed(1))
    assert acc[0] > 95.0, acc
    assert acc[1] < 45.0, acc  # chance is 25 %


def test_mlp_regressor_recovers_a_bilinear_target_and_skips_constant_dims():
    """The relative rotation is bilinear in two views' codes: the MLP must read a product."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3000, 4, generator=g)
    y = torch.stack([x[:, 0] * x[:, 1], torch.zeros(3000)], dim=1)  # a product and a constant dimension
    sse, total = fit_regressor(x[:2500], y[:2500], x[2500:], y[2500:], EvalConfig(epochs=40, batch_size=64, hidden=64),
                               torch.Generator().manual_seed(1))
    metrics = summarise_r2(sse, total, {"product": [0], "constant": [1]}, "r2")
    assert metrics["r2/product"] > 0.8, metrics
    assert "r2/constant" not in metrics and metrics["r2"] == metrics["r2/product"]
