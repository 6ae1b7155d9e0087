"""Probe metrics: exact accuracy and per-dimension R² from sufficient statistics."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from trainer.stats import effective_rank
from trainer.training.probes import ProbeMetrics, probe_loss


def _r2_reference(y: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """sklearn's r2_score(multioutput='raw_values')."""
    return 1 - ((y - pred) ** 2).sum(0) / ((y - y.mean(0)) ** 2).sum(0)


def test_r2_and_accuracy_match_reference_over_several_batches():
    torch.manual_seed(0)
    y = torch.randn(300, 3)
    pred_enc = y + 0.5 * torch.randn(300, 3)
    pred_agg = torch.randn(300, 3)
    label = torch.randint(0, 4, (300,))
    logits = torch.randn(300, 4)
    metrics = ProbeMetrics({"rotation": [0, 1], "scale": [2]}, torch.device("cpu"))
    for i in range(0, 300, 64):
        sl = slice(i, i + 64)
        pred = {"logits_agg": logits[sl], "logits_enc": torch.nn.functional.one_hot(label[sl], 4).float(),
                "action_enc": pred_enc[sl], "action_agg": pred_agg[sl]}
        metrics.update(pred, label[sl], y[sl], torch.tensor(0.5))
    result = metrics.compute()
    ref_enc = _r2_reference(y, pred_enc)
    assert abs(result["val/equi/r2_enc"] - ref_enc.mean().item()) < 1e-6
    assert abs(result["val/equi/r2_enc/rotation"] - ref_enc[:2].mean().item()) < 1e-6
    assert abs(result["val/equi/r2_agg"] - _r2_reference(y, pred_agg).mean().item()) < 1e-6
    assert result["val/inv/acc_enc"] == 100.0
    assert abs(result["val/inv/acc_agg"] - 100 * (logits.argmax(-1) == label).float().mean().item()) < 1e-6
    assert abs(result["val/loss"] - 0.5) < 1e-6


def test_zero_weight_batch_is_ignored_and_constant_dims_are_skipped():
    metrics = ProbeMetrics({"a": [0], "b": [1]}, torch.device("cpu"))
    y = torch.stack([torch.linspace(-1, 1, 10), torch.zeros(10)], 1)  # dim 1 disabled: constant
    pred = {"logits_agg": torch.zeros(10, 2), "logits_enc": torch.zeros(10, 2), "action_enc": y, "action_agg": y}
    metrics.update(pred, torch.zeros(10, dtype=torch.long), y, torch.tensor(1.0))
    metrics.update(pred, torch.ones(10, dtype=torch.long), y, torch.tensor(9.0), weight=0.0)
    result = metrics.compute()
    assert result["val/equi/r2_enc"] == 1.0 and "val/equi/r2_enc/b" not in result
    assert result["val/inv/acc_agg"] == 100.0


def test_effective_rank_separates_collapsed_from_spread_features():
    torch.manual_seed(0)
    spread = torch.randn(512, 32)
    collapsed = torch.randn(512, 1) @ torch.randn(1, 32) + 1e-4 * torch.randn(512, 32)
    assert effective_rank(spread) > 20 and effective_rank(collapsed) < 2


def test_classifiers_learn_from_labelled_samples_only():
    torch.manual_seed(0)
    pred = {"logits_agg": torch.randn(4, 10, requires_grad=True), "logits_enc": torch.randn(4, 10, requires_grad=True),
            "action_enc": torch.randn(4, 3), "action_agg": torch.randn(4, 3)}
    action = torch.zeros(4, 3)
    unlabelled = probe_loss(pred, torch.full((4,), -1), action)  # STL-10's unlabeled split
    assert torch.isfinite(unlabelled)
    unlabelled.backward()
    assert pred["logits_agg"].grad.abs().sum() == 0 and pred["logits_enc"].grad.abs().sum() == 0
    mixed = probe_loss(pred, torch.tensor([3, -1, 5, -1]), action)
    labelled_only = (F.cross_entropy(pred["logits_agg"][[0, 2]], torch.tensor([3, 5]))
                     + F.cross_entropy(pred["logits_enc"][[0, 2]], torch.tensor([3, 5])))
    assert torch.allclose(mixed - unlabelled, labelled_only)
