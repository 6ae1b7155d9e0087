"""EMA decay schedule and the parameter-only update (docs/paper-and-original-code.md#ema-target)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from trainer.training.ema import ema_decay_at, ema_update_


def test_ema_schedule_values():
    assert ema_decay_at(0, 100) == pytest.approx(0.996)
    assert ema_decay_at(50, 100) == pytest.approx(0.998)
    assert ema_decay_at(100, 100) == pytest.approx(1.0)
    assert ema_decay_at(25, 100) < ema_decay_at(75, 100)
    assert ema_decay_at(70, 100, base=0.99, schedule="constant") == 0.99
    with pytest.raises(ValueError):
        ema_decay_at(0, 100, schedule="linear")


def _pair():
    torch.manual_seed(0)
    online = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    target = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)).requires_grad_(False)
    return target, online


def test_ema_update_moves_target_toward_online():
    target, online = _pair()
    before = [p.clone() for p in target.parameters()]
    ema_update_(target, online, decay=0.9)
    for t, b, o in zip(target.parameters(), before, online.parameters()):
        assert torch.allclose(t, 0.9 * b + 0.1 * o)
    ema_update_(target, online, decay=0.0)
    assert all(torch.equal(t, o) for t, o in zip(target.parameters(), online.parameters()))


def test_ema_update_leaves_buffers():
    target, online = _pair()
    online(torch.randn(8, 3))  # change the online BN running statistics
    buffers = {k: v.clone() for k, v in target.named_buffers()}
    ema_update_(target, online, decay=0.5)
    assert all(torch.equal(buffers[k], v) for k, v in target.named_buffers())


def test_the_authors_per_epoch_schedule_changes_once_an_epoch_one_step_late():
    """Theirs: after every step tau <- schedule(current epoch); so a step uses the value its predecessor set."""
    per_epoch = [ema_decay_at(step, 40, 0.996, "legacy_cosine_per_epoch", steps_per_epoch=10) for step in range(41)]
    assert per_epoch[0] == per_epoch[10] == pytest.approx(0.996)  # epoch 0 (its first step: the constructor value)
    assert per_epoch[11] == per_epoch[20] == pytest.approx(1 - 0.004 * (math.cos(math.pi / 4) + 1) / 2)  # epoch 1
    assert per_epoch[21] == pytest.approx(0.998)  # epoch 2 of 4: half way
    assert len(set(per_epoch[1:])) == 4  # four values, one per epoch
