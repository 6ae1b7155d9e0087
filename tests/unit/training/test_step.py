"""The training step runs the online probes in the model's backward, and that changes nothing but the time.

Before, a step was: model backward, optimizer step, EMA update, then a probe forward, a probe backward and the probe
optimizer's step. Now the probe loss joins the model's backward and the probe optimizer steps beside the model's.
The probes read detached features, so the model's gradients are those of its loss alone; the probes' are the same
too (same features, same probe weights), and no random number is drawn in between: the steps are equal bit for bit.
"""

from __future__ import annotations

import pytest
import torch

from trainer.methods.seq_jepa import SeqJEPA
from trainer.model import build_encoder
from trainer.training.ema import ema_update_
from trainer.training.optim import set_lr
from trainer.training.precision import autocast
from trainer.training.probes import OnlineProbes, probe_features, probe_loss
from trainer.training.state import TrainState
from trainer.training.step import synthetic_batch, train_step

CPU = torch.device("cpu")
A, CLASSES = 5, 7


def _state() -> TrainState:
    """A tiny seq-JEPA with dropout (random draws in its forward), EMA target, AdamW and its probes."""
    torch.manual_seed(0)
    model = SeqJEPA(build_encoder("convnet", in_channels=1, width=4), A, action_proj_dim=8, num_layers=2,
                    pred_hidden=16, dropout=0.1)
    probes = OnlineProbes(model.encoder.out_dim, model.aggregate_dim, A, CLASSES, 16)
    return TrainState(model, torch.optim.AdamW(model.parameters(), lr=1e-3), probes,
                      torch.optim.Adam(probes.parameters(), lr=1e-3), None, CPU)


def _separate_step(state: TrainState, batch: dict, lr: float, ema_decay: float, bf16: bool) -> torch.Tensor:
    """The step as it was: the probes' forward, backward and optimizer step after the model's step and EMA update."""
    set_lr(state.optimizer, lr)
    with autocast(CPU, bf16):
        out = state.model(batch["views"], batch["rel_actions"], batch["actions"])
    state.optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    state.optimizer.step()
    for target, online in state.model.ema_pairs():
        ema_update_(target, online, ema_decay)
    loss = probe_loss(state.probes(probe_features(out)), batch["label"], batch["rel_actions"][:, 0].float())
    state.probe_optimizer.zero_grad(set_to_none=True)
    loss.backward()
    state.probe_optimizer.step()
    return out.loss.detach()


def _batch(seed: int) -> dict:
    return synthetic_batch(6, 4, 1, 16, A, CLASSES, CPU, seed=seed)


def _assert_equal_tensors(found: dict, expected: dict) -> None:
    assert found.keys() == expected.keys()
    for key in expected:
        assert torch.equal(found[key], expected[key]), key


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_the_model_gradients_are_those_of_its_loss_alone_bit_for_bit(bf16):
    folded, alone = _state(), _state()
    batch = _batch(1)
    torch.manual_seed(5)
    train_step(folded, batch, 1e-3, 0.99, None, bf16)  # the probe loss in the same backward
    torch.manual_seed(5)  # the same dropout masks
    with autocast(CPU, bf16):
        out = alone.model(batch["views"], batch["rel_actions"], batch["actions"])
    out.loss.backward()  # no probe term at all
    trained = [name for name, p in alone.model.named_parameters() if p.requires_grad]  # not the EMA target
    assert trained and all(alone.model.get_parameter(name).grad is not None for name in trained)
    _assert_equal_tensors({name: folded.model.get_parameter(name).grad for name in trained},
                          {name: alone.model.get_parameter(name).grad for name in trained})
    assert all(p.grad is not None for p in folded.probes.parameters())  # the probes did learn in that backward


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_the_folded_step_equals_the_separate_one_bit_for_bit(bf16):
    """Losses, model, EMA target and BatchNorm statistics, probes and both optimizers' states after three steps, and
    the random generator's state (the order of the draws)."""
    folded, separate = _state(), _state()
    torch.manual_seed(7)
    losses = [train_step(folded, _batch(s), 1e-3, 0.99, None, bf16)["train/loss"] for s in range(3)]
    rng = torch.get_rng_state()
    torch.manual_seed(7)
    expected = [_separate_step(separate, _batch(s), 1e-3, 0.99, bf16) for s in range(3)]
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(a, b) for a, b in zip(losses, expected))
    _assert_equal_tensors(folded.model.state_dict(), separate.model.state_dict())
    _assert_equal_tensors(folded.probes.state_dict(), separate.probes.state_dict())
    for a, b in ((folded.optimizer, separate.optimizer), (folded.probe_optimizer, separate.probe_optimizer)):
        sa, sb = a.state_dict()["state"], b.state_dict()["state"]
        assert sa.keys() == sb.keys()
        for key in sa:
            _assert_equal_tensors({k: torch.as_tensor(v) for k, v in sa[key].items()},
                                  {k: torch.as_tensor(v) for k, v in sb[key].items()})
