"""Offline probes on cached features: each probe learns what its features hold, and nothing else (path integration
included: docs/paper-and-original-code.md#path-integration)."""

from __future__ import annotations

import pytest
import torch

from trainer.config import EvalConfig
from trainer.evaluation.features import SplitFeatures
from trainer.evaluation.path_integration import path_metrics
from trainer.evaluation.probes import fit_classifiers, fit_linear_regressors, fit_regressor, standardise
from trainer.stats import summarise_r2

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


def test_each_linear_regressor_reads_only_its_own_features():
    g = torch.Generator().manual_seed(0)
    y = torch.randn(2, 1200, 3, generator=g)
    mixing = torch.randn(3, 8, generator=g)
    informative = y[0] @ mixing + 0.05 * torch.randn(1200, 8, generator=g)  # head 0: a linear map of its target
    feats = torch.stack([informative, torch.randn(1200, 8, generator=g)])  # head 1: noise
    y = y * torch.tensor([1.0, 0.01, 100.0]) + 5.0  # any offset and scale: the targets are standardised
    sse, total = fit_linear_regressors(feats[:, :1000], y[:, :1000], feats[:, 1000:], y[:, 1000:], CFG,
                                       torch.Generator().manual_seed(1))
    r2 = 1 - sse / total
    assert sse.shape == (2, 3) and (r2[0] > 0.95).all() and (r2[1].abs() < 0.1).all(), r2


def _path_features(n: int, groups_dim: int, seed: int) -> SplitFeatures:
    """Features whose path z_AGG is a linear code of the path action, the no-vision one noise (K = 2 lengths)."""
    g = torch.Generator().manual_seed(seed)
    path = torch.randn(2, n, groups_dim, generator=g)
    code = path @ torch.randn(groups_dim, 16, generator=torch.Generator().manual_seed(9))
    zeros = torch.zeros(n, 2)
    return SplitFeatures(z_enc=zeros, z_agg=zeros[None], z_agg_view1=zeros, z_agg_view2=zeros, action=zeros,
                         abs_action=zeros, label=torch.zeros(n, dtype=torch.long), z_path=code,
                         z_path_no_vision=torch.randn(2, n, 16, generator=g), path_action=path)


@pytest.mark.parametrize("groups, telling", [({"scale": [0], "rotation": [1, 2]}, "rotation"),
                                             ({"position": [0, 1], "other": [2]}, "position"),
                                             ({"crop": [0, 1], "jitter": [2]}, None)])
def test_path_integration_reports_the_model_and_its_no_vision_control_per_length(groups, telling):
    metrics = path_metrics(_path_features(1500, 3, 0), _path_features(400, 3, 1), [2, 5], groups, CFG,
                           torch.Generator().manual_seed(2))
    for m in (2, 5):
        assert metrics[f"eval/path/r2/M{m}"] > 0.95 and metrics[f"eval/path/r2_no_vision/M{m}"] < 0.1, metrics
        for group in groups:
            assert f"eval/path/r2/M{m}/{group}" in metrics and f"eval/path/r2_no_vision/M{m}/{group}" in metrics
        if telling:
            assert metrics[f"eval/path/r2/M{m}"] == metrics[f"eval/path/r2/M{m}/{telling}"]
    no_path = _path_features(10, 3, 0)
    no_path.z_path = None
    assert path_metrics(no_path, no_path, [2, 5], groups, CFG, torch.Generator()) == {}
