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


def _authors_ema_(target: nn.Module, online: nn.Module, tau: float) -> None:
    """The authors' update, as their training loop writes it: param_t = param_t * tau + param_o * (1 - tau)."""
    for param_t, param_o in zip(target.parameters(), online.parameters()):
        param_t.data = param_t.data * tau + param_o.data * (1.0 - tau)


def _wide_pair() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(3)
    return nn.Linear(64, 64), nn.Linear(64, 64)


@pytest.mark.parametrize("tau", [0.996, 0.99731, 0.999999])
def test_ema_update_is_the_authors_arithmetic_bit_for_bit(tau):
    (target, online), (reference, reference_online) = _wide_pair(), _wide_pair()
    for _ in range(5):  # repeated updates with the same online weights: rounding would accumulate
        ema_update_(target, online, tau)
        _authors_ema_(reference, reference_online, tau)
    assert all(torch.equal(a, b) for a, b in zip(target.parameters(), reference.parameters()))
    # the lerp form this replaced rounds differently: one ulp on many elements after a single update
    (lerped, lerp_online), (once, once_online) = _wide_pair(), _wide_pair()
    with torch.no_grad():
        torch._foreach_lerp_(list(lerped.parameters()), list(lerp_online.parameters()), 1 - tau)
    _authors_ema_(once, once_online, tau)
    assert not torch.equal(lerped.weight, once.weight)


def test_three_training_steps_replay_the_authors_loop_bit_for_bit():
    """The project's step (seq-JEPA, dropout on, Adam without weight decay as the authors' effective optimizer, the
    EMA decay changing every step) against the step written out as the authors' loop: forward, backward, Adam step,
    their EMA. Every parameter and buffer of the model, EMA target included, equal after three steps."""
    from trainer.methods.seq_jepa import SeqJEPA
    from trainer.model import build_encoder
    from trainer.training.probes import OnlineProbes
    from trainer.training.state import TrainState
    from trainer.training.step import synthetic_batch, train_step

    def model():
        torch.manual_seed(0)
        return SeqJEPA(build_encoder("convnet", in_channels=1, width=4), 5, action_proj_dim=8, num_layers=2,
                       pred_hidden=16, dropout=0.1)

    ours, theirs = model(), model()
    probes = OnlineProbes(ours.encoder.out_dim, ours.aggregate_dim, 5, 7, 16)
    state = TrainState(ours, torch.optim.Adam(ours.parameters(), lr=1e-3), probes,
                       torch.optim.Adam(probes.parameters(), lr=1e-3), None, torch.device("cpu"))
    their_optimizer = torch.optim.Adam(theirs.parameters(), lr=1e-3)
    taus = [ema_decay_at(step, 4, 0.9) for step in range(3)]  # a fast schedule: large updates, 3 distinct values
    batches = [synthetic_batch(6, 4, 1, 16, 5, 7, torch.device("cpu"), seed=s) for s in range(3)]
    for step, (tau, batch) in enumerate(zip(taus, batches)):
        torch.manual_seed(10 + step)  # the same dropout masks
        train_step(state, batch, 1e-3, tau, None, bf16=False)
        torch.manual_seed(10 + step)
        loss = theirs(batch["views"], batch["rel_actions"], batch["actions"]).loss
        their_optimizer.zero_grad()
        loss.backward()
        their_optimizer.step()
        _authors_ema_(theirs.target_encoder, theirs.encoder, tau)
    found, expected = ours.state_dict(), theirs.state_dict()
    assert found.keys() == expected.keys()
    assert [key for key in expected if not torch.equal(found[key], expected[key])] == []
