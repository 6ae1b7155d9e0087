"""Where the authors' baselines decide the numbers (issue 23): conditional BYOL's BatchNorm statistics and pair-probe
embedding, and SEN / EquiMod on raw actions (their --learn-act-emb 0)."""

from __future__ import annotations

import copy

import pytest
import torch

from trainer.methods.build import build_method
from trainer.methods.catalog import method_entry
from trainer.methods.losses import byol_loss
from trainer.model import build_encoder

A = 5


def _model(name: str, **settings):
    torch.manual_seed(0)
    return build_method(name, build_encoder("convnet", in_channels=1, width=4), A,
                        method_entry(name).settings(projector_dims=[32, 16], **settings), action_proj_dim=8)


def _batch(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(6, 3, 1, 16, 16, generator=g), torch.randn(6, 2, A, generator=g)


def _bn_statistics(module: torch.nn.Module) -> list[torch.Tensor]:
    return [b.clone() for name, b in module.named_buffers() if name.endswith(("running_mean", "running_var"))]


def _fed(module: torch.nn.Module, *inputs: torch.Tensor) -> torch.nn.Module:
    """A copy of a module fed the inputs in train mode, one forward each: its BN statistics are the replay's."""
    replay = copy.deepcopy(module).train()
    with torch.no_grad():
        for x in inputs:
            replay(x)
    return replay


def _assert_same(found: list[torch.Tensor], expected: list[torch.Tensor]) -> None:
    assert len(found) == len(expected) > 0
    assert all(torch.equal(a, b) for a, b in zip(found, expected))


def test_cond_byol_moves_the_online_bn_statistics_once_a_step_as_the_authors():
    """A training forward: view 1 alone goes through the online encoder, view 2 through the target only."""
    model = _model("cond_byol").train()
    views, actions = _batch()
    x1, x2 = views[:, 0], views[:, 1]
    online, target = copy.deepcopy(model.encoder), copy.deepcopy(model.target_encoder)
    model(views, actions)
    _assert_same(_bn_statistics(model.encoder), _bn_statistics(_fed(online, x1)))
    twice = _bn_statistics(_fed(online, x1, x2))  # what the earlier version did (x2 under no_grad, train mode)
    assert not all(torch.equal(a, b) for a, b in zip(_bn_statistics(model.encoder), twice))
    _assert_same(_bn_statistics(model.target_encoder), _bn_statistics(_fed(target, x2)))


def test_cond_byol_gives_the_pair_probe_the_target_embedding_and_keeps_its_loss():
    model = _model("cond_byol").train()
    views, actions = _batch()
    model.target_encoder.load_state_dict({k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v
                                          for k, v in model.target_encoder.state_dict().items()})  # not the online
    target_encoder, target_projector = copy.deepcopy(model.target_encoder), copy.deepcopy(model.target_projector)
    online = copy.deepcopy(model)
    out = model(views, actions)
    with torch.no_grad():
        z2 = target_encoder(views[:, 1])
        expected_z1 = online.encoder(views[:, 0])
        prediction = online.predictor(torch.cat([online.action_embedding(actions[:, 0]),
                                                 online.projector(expected_z1)], dim=1))
        expected_loss = byol_loss(prediction.float(), target_projector(z2).float())
    assert torch.equal(out.z2, z2) and not out.z2.requires_grad
    assert torch.equal(out.z1.detach(), expected_z1)
    assert torch.equal(out.loss.detach(), expected_loss)


@pytest.mark.parametrize("name", ["sen", "equimod"])
def test_sen_and_equimod_read_the_raw_action_when_it_is_not_learned(name):
    raw, learned = _model(name, learn_action_embedding=False), _model(name)
    assert not any("action_embedding" in key for key in raw.state_dict())
    assert raw.predictor[0].in_features == A + 16  # the raw action beside the 16-wide projection
    assert learned.predictor[0].in_features == 8 + 16  # the default: the 8-wide learned embedding
    views, actions = _batch()
    seen = []
    raw.predictor.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    out = raw(views, actions)
    assert torch.equal(seen[0][:, :A], actions[:, 0])  # the action 1 -> 2 verbatim
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert all(p.grad is not None for p in raw.encoder.parameters())
    assert sum(p.numel() for p in raw.parameters()) == sum(p.numel() for p in learned.parameters()) - (
        learned.action_embedding.proj.weight.numel() + (8 - A) * 16)  # no embedding; a narrower predictor input


@pytest.mark.parametrize("name", ["sen", "equimod"])
def test_the_raw_action_switch_is_a_config_key_of_the_method(name):
    from trainer.config import load_config
    from trainer.methods.build import build_model

    config = load_config(None, [f"model.method={name}", f"{name}.learn_action_embedding=false", "model.encoder=convnet",
                                "model.conv_width=4"])
    assert config.method.learn_action_embedding is False
    assert not any("action_embedding" in key for key in build_model(config, action_dim=A, in_channels=1).state_dict())
