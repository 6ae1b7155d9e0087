"""Every baseline on a tiny encoder: output contract, which views and actions it reads, where gradients go."""

from __future__ import annotations

import pytest
import torch

from trainer.methods.base import MethodOutput
from trainer.methods.build import build_method
from trainer.methods.catalog import CATALOG, DEFAULT_METHOD, method_entry
from trainer.model import build_encoder

ALL = sorted(name for name in CATALOG if name != DEFAULT_METHOD)  # the baselines
ACTION_CONDITIONED = ["cond_byol", "equimod", "sen", "sie"]
SMALL = [64, 32]  # projector widths: the paper's layouts at a tenth of the width, fast on a CPU


def _tiny(name: str, action_dim: int = 4, projector_dims: list[int] | None = SMALL):
    torch.manual_seed(0)
    settings = method_entry(name).settings(**({"projector_dims": projector_dims} if projector_dims else {}))
    return build_method(name, build_encoder("convnet", in_channels=1, width=4), action_dim, settings,
                        action_proj_dim=8)


def _batch(action_dim: int = 4, batch: int = 6, views: int = 3, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, views, 1, 16, 16, generator=g), torch.randn(batch, views - 1, action_dim, generator=g)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("action_dim", [2, 4, 6, 7, 9])
def test_forward_gives_a_float32_scalar_loss_and_encoder_embeddings(name, action_dim):
    model = _tiny(name, action_dim)
    out = model(*_batch(action_dim))
    assert isinstance(out, MethodOutput)
    assert out.loss.shape == () and out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    assert out.z1.shape == out.z2.shape == (6, model.encoder.out_dim)
    assert out.z_agg is None and out.z_agg_single is None and not model.has_aggregate


@pytest.mark.parametrize("name", ALL)
def test_paper_widths_build_and_run(name):
    model = _tiny(name, projector_dims=None)  # the settings' defaults: the paper's widths
    assert torch.isfinite(model(*_batch()).loss)


@pytest.mark.parametrize("name", ALL)
def test_z1_and_z2_are_the_online_encoder_of_views_0_and_1(name):
    model = _tiny(name).eval()  # eval: BN running statistics, so a sample's embedding does not depend on the batch
    views, actions = _batch()
    out = model(views, actions)
    with torch.no_grad():
        torch.testing.assert_close(out.z1, model.encoder(views[:, 0]))
        torch.testing.assert_close(out.z2, model.encoder(views[:, 1]))


@pytest.mark.parametrize("name", ALL)
def test_the_loss_reads_only_the_views_and_actions_the_method_trains_on(name):
    model = _tiny(name).eval()
    views, actions = _batch(views=4)
    loss = model(views, actions).loss
    later_views, later_actions = views.clone(), actions.clone()
    later_views[:, model.min_views:] += 1.0
    later_actions[:, 1:] += 1.0
    assert model(later_views, later_actions).loss == loss  # views 0..min_views-1 and action 0 -> 1 only
    last_used_view = views.clone()
    last_used_view[:, model.min_views - 1] += 1.0
    assert model(last_used_view, actions).loss != loss
    other_action = actions.clone()
    other_action[:, 0] += 1.0
    assert (model(views, other_action).loss != loss) == (name in ACTION_CONDITIONED)


def test_vicreg_traj_refuses_sequences_shorter_than_three_views():
    model = _tiny("vicreg_traj")
    with pytest.raises(ValueError, match="vicreg_traj needs views of shape"):
        model(*_batch(views=2))


@pytest.mark.parametrize("name", ALL)
def test_every_trainable_parameter_gets_a_finite_gradient_and_no_ema_target_does(name):
    model = _tiny(name)
    model(*_batch()).loss.backward()
    targets = {id(p) for target, _ in model.ema_pairs() for p in target.parameters()}
    for param_name, param in model.named_parameters():
        if id(param) in targets:
            assert not param.requires_grad and param.grad is None, param_name
        else:
            assert param.requires_grad and param.grad is not None, param_name
            assert torch.isfinite(param.grad).all(), param_name
    for child_name, child in model.named_children():  # no online head is silently cut off from the loss
        params = list(child.parameters())
        if params and not any(id(p) in targets for p in params):
            assert sum(p.grad.abs().sum() for p in params) > 0, child_name


@pytest.mark.parametrize("name", ALL)
def test_ema_targets_are_frozen_copies_with_the_online_parameter_layout(name):
    model = _tiny(name)
    assert bool(model.ema_pairs()) == (name in ("byol", "cond_byol"))
    for target, online in model.ema_pairs():
        assert target is not online
        target_params, online_params = list(target.parameters()), list(online.parameters())
        assert [p.shape for p in target_params] == [p.shape for p in online_params]
        for t, o in zip(target_params, online_params):
            assert not t.requires_grad and o.requires_grad
            assert t.data_ptr() != o.data_ptr() and torch.equal(t, o)


@pytest.mark.parametrize("name", ALL)
def test_shard_units_are_head_submodules_and_never_the_encoder(name):
    model = _tiny(name)
    submodules = {id(m) for m in model.modules()}
    units = model.shard_units()
    assert units and all(id(unit) in submodules for unit in units)
    assert all(unit is not model.encoder and unit is not model for unit in units)


@pytest.mark.parametrize("name", ALL)
def test_the_loss_stays_float32_under_bf16_autocast(name):
    model = _tiny(name)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(*_batch()).loss
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


@pytest.mark.parametrize("name", ALL)
def test_each_method_reports_the_terms_of_its_loss(name):
    out = _tiny(name)(*_batch())
    expected = {"simclr": {"nt_xent"}, "sen": {"nt_xent"}, "byol": {"prediction"}, "cond_byol": {"prediction"},
                "equimod": {"invariant", "equivariant"}, "vicreg": {"invariance", "variance", "covariance"},
                "vicreg_traj": {"invariance", "variance", "covariance", "trajectory"},
                "sie": {"invariance", "equivariance", "variance", "covariance"}}[name]
    assert set(out.logs) == expected
    assert all(v.shape == () and v.dtype == torch.float32 and not v.requires_grad for v in out.logs.values())
    if len(expected) == 1:  # the loss is its one term
        assert out.logs[next(iter(expected))] == out.loss.detach()
