"""Learning-rate schedule and weight-decay groups
(docs/paper-and-original-code.md#the-original-optimiser, #effective-learning-rate-schedule)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from trainer.config import OptimConfig
from trainer.training.optim import build_optimizer, lr_at


def test_cosine_schedule_warms_up_then_decays_to_final():
    cfg = OptimConfig(lr=4e-4, start_lr=1e-5, final_lr=1e-5, warmup_epochs=2, schedule="cosine")
    spe, total = 10, 100
    assert lr_at(0, spe, total, cfg) == pytest.approx(1e-5)
    assert lr_at(10, spe, total, cfg) == pytest.approx(1e-5 + (4e-4 - 1e-5) / 2)
    assert lr_at(20, spe, total, cfg) == pytest.approx(4e-4)
    assert lr_at(60, spe, total, cfg) == pytest.approx(1e-5 + (4e-4 - 1e-5) * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(100, spe, total, cfg) == pytest.approx(1e-5)


def test_legacy_schedule_is_per_epoch_warmup_then_constant():
    cfg = OptimConfig(lr=4e-4, start_lr=1e-5, warmup_epochs=20, schedule="legacy_constant")
    assert lr_at(5, 10, 10_000, cfg) == pytest.approx(1e-5)  # still epoch 0
    # epoch 1, as in docs/paper-and-original-code.md#effective-learning-rate-schedule
    assert lr_at(10, 10, 10_000, cfg) == pytest.approx(2.95e-5)
    assert lr_at(9_999, 10, 10_000, cfg) == pytest.approx(4e-4)  # never decays


def test_weight_decay_only_on_weights():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    model.register_parameter("token", nn.Parameter(torch.zeros(1, 1, 4)))
    optimizer = build_optimizer(model, OptimConfig(name="adamw", weight_decay=0.05))
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.05 and plain["weight_decay"] == 0.0
    assert {p.ndim for p in decayed["params"]} == {2, 3} and {p.ndim for p in plain["params"]} == {1}
    assert isinstance(optimizer, torch.optim.AdamW)


def test_lr_zero_is_the_untrained_floor_at_every_step():
    cfg = OptimConfig(lr=0.0, start_lr=1e-5, final_lr=1e-4, warmup_epochs=2)
    assert [lr_at(step, 10, 100, cfg) for step in (0, 5, 20, 99)] == [0.0, 0.0, 0.0, 0.0]
