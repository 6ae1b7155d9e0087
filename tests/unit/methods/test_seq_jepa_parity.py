"""Where the authors' code path decides the numbers (issue: parity on every dataset path): the order of the two action
BatchNorm calls, the zero rows their augmentation/PLS path puts into that BN, and their raw-action variant there."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainer.methods.seq_jepa import SeqJEPA
from trainer.model import build_encoder

B, M, C, S, A = 4, 3, 1, 16, 5


def _model(**kwargs) -> SeqJEPA:
    torch.manual_seed(0)
    return SeqJEPA(build_encoder("convnet", in_channels=C, width=4), A, action_proj_dim=8, num_layers=1,
                   pred_hidden=16, dropout=0.0, **kwargs)


def _batch(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, M + 1, C, S, S, generator=g), torch.randn(B, M, A, generator=g),
            torch.randn(B, M + 1, A, generator=g))


def _replay(model: SeqJEPA, *batches: torch.Tensor) -> nn.BatchNorm1d:
    """A fresh action BN (same settings) fed the projected action batches in the given order, in train mode."""
    bn = nn.BatchNorm1d(8, affine=False)
    with torch.no_grad():
        for actions in batches:
            bn(model.action_embedding.proj(actions))
    return bn


def _statistics(bn) -> tuple[torch.Tensor, torch.Tensor]:
    return bn.running_mean.clone(), bn.running_var.clone()


def _assert_same(found: tuple, expected: tuple) -> None:
    for a, b in zip(found, expected):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_the_predictors_action_goes_through_the_action_bn_first_as_the_authors_do():
    model = _model()
    views, rel, _ = _batch()
    model(views, rel)  # train mode: one update of the running statistics per BN call
    found = _statistics(model.action_embedding.bn)
    _assert_same(found, _statistics(_replay(model, rel[:, M - 1], rel.reshape(-1, A))))
    reverse = _statistics(_replay(model, rel.reshape(-1, A), rel[:, M - 1]))  # what the order used to be
    assert not torch.allclose(found[0], reverse[0], atol=1e-6)


@pytest.mark.parametrize("legacy", [False, True], ids=["real actions", "legacy zeros"])
def test_the_legacy_switch_puts_b_zero_rows_into_the_action_bn(legacy):
    model = _model(legacy_action_bn_zeros=legacy)
    views, rel, _ = _batch()
    tokens = []
    model.aggregator.register_forward_pre_hook(lambda _m, args: tokens.append(args[0].detach().clone()))
    model(views, rel)
    token_batch = torch.cat([rel[:, :-1], torch.zeros_like(rel[:, -1:])], 1) if legacy else rel
    _assert_same(_statistics(model.action_embedding.bn),
                 _statistics(_replay(model, rel[:, M - 1], token_batch.reshape(-1, A))))
    D = model.feature_dim
    assert torch.all(tokens[0][:, -1, D:] == 0)  # either way the last token carries a zero action after the BN


def test_the_legacy_raw_variant_feeds_absolute_latents_none_zeroed():
    model = _model(learn_action_embedding=False, legacy_absolute_raw_actions=True)
    views, rel, absolute = _batch()
    tokens, pred_in = [], []
    model.aggregator.register_forward_pre_hook(lambda _m, args: tokens.append(args[0].detach().clone()))
    model.predictor.register_forward_pre_hook(lambda _m, args: pred_in.append(args[0].detach().clone()))
    model(views, rel, absolute)
    D, E = model.feature_dim, model.token_dim
    assert torch.equal(tokens[0][:, 1:, D:D + A], absolute[:, :M])  # every observed view's own latent, the last too
    # (tokens[1] is the leakage probe's single-view pass)
    assert torch.equal(pred_in[0][:, E:E + A], absolute[:, M])  # the target view's latent
    default, fixed = _model(learn_action_embedding=False), []  # the fix: relative actions, the last token zero
    default.aggregator.register_forward_pre_hook(lambda _m, args: fixed.append(args[0].detach().clone()))
    default(views, rel, absolute)
    assert torch.equal(fixed[0][:, 1, D:D + A], rel[:, 0]) and torch.all(fixed[0][:, -1, D:] == 0)
