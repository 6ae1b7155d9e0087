"""SeqJEPA: shapes, which action goes where, stop-gradient, variants, bug B4
(docs/paper-and-original-code.md#actions-per-token, #variants, #b4-raw-action-variant-zeroes-the-predictor-action)."""

from __future__ import annotations

import pytest
import torch

from trainer.methods.seq_jepa import SeqJEPA
from trainer.model import build_encoder

B, C, S, A = 4, 1, 16, 5


def _model(**kwargs) -> SeqJEPA:
    torch.manual_seed(0)
    defaults = dict(action_proj_dim=8, num_layers=2, pred_hidden=16, dropout=0.0)
    return SeqJEPA(build_encoder("convnet", in_channels=C, width=4), A, **{**defaults, **kwargs})


def _inputs(m: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, m, C, S, S, generator=g), torch.randn(B, C, S, S, generator=g),
            torch.randn(B, m, A, generator=g))


def _forward(model: SeqJEPA, obs: torch.Tensor, target: torch.Tensor, actions):
    """The model on observed views + the target view, as the trainer calls it: (B, M+1, C, H, W)."""
    return model(torch.cat([obs, target[:, None]], dim=1), actions)


def _capture_inputs(module: torch.nn.Module, store: list):
    return module.register_forward_pre_hook(lambda _mod, args: store.append(args[0].detach().clone()))


@pytest.mark.parametrize("m", [1, 2, 3, 4, 5])
def test_output_shapes_for_seq_len_1_to_5(m):
    model = _model()
    out = _forward(model, *_inputs(m))
    D, E = model.feature_dim, model.token_dim
    assert (D, E) == (32, 40)
    assert out.loss.shape == () and out.loss.dtype == torch.float32
    assert out.z_agg.shape == (B, E) and out.z_enc.shape == (B, m, D)
    assert out.target_emb.shape == (B, D) and out.prediction.shape == (B, D)
    assert out.z1.shape == out.z2.shape == (B, D)
    assert out.z_agg_single.shape == (B, 2, E) and not out.z_agg_single.requires_grad
    expected_z2 = out.z_enc[:, 1] if m >= 2 else out.target_emb  # docs/paper-and-original-code.md#returned-tensors
    assert torch.equal(out.z2, expected_z2) and torch.equal(out.z1, out.z_enc[:, 0])


def test_last_token_action_is_zero():
    model = _model()
    seen = []
    _capture_inputs(model.aggregator, seen)
    _forward(model, *_inputs(3))
    sequence = seen[0]  # (B, 1 + M, E): [AGG] then the M view tokens
    D = model.feature_dim
    assert sequence.shape == (B, 4, model.token_dim)
    assert torch.all(sequence[:, -1, D:] == 0), "the last observed token must carry a zero action"
    assert sequence[:, 1:-1, D:].abs().sum() > 0, "earlier tokens carry their actions"


def test_predictor_receives_last_to_target_action():
    model = _model().eval()  # eval: BN uses running statistics, so rows do not influence each other
    obs, target, actions = _inputs(3)
    D, E = model.feature_dim, model.token_dim

    def run(acts):
        tokens, pred_in = [], []
        h1, h2 = _capture_inputs(model.aggregator, tokens), _capture_inputs(model.predictor, pred_in)
        _forward(model, obs, target, acts)
        h1.remove(), h2.remove()
        return tokens[0], pred_in[0]

    tokens, pred_in = run(actions)
    assert pred_in.shape == (B, E + model.action_width)
    assert torch.allclose(pred_in[:, E:], model.action_embedding(actions[:, -1]))

    changed_last = actions.clone()
    changed_last[:, -1] += 1.0
    tokens_l, pred_in_l = run(changed_last)
    assert torch.equal(tokens_l, tokens), "a_M only reaches the predictor (its token slot is zero)"
    assert not torch.allclose(pred_in_l[:, E:], pred_in[:, E:])

    changed_first = actions.clone()
    changed_first[:, 0] += 1.0
    tokens_f, pred_in_f = run(changed_first)
    assert not torch.allclose(tokens_f[:, 1, D:], tokens[:, 1, D:]), "a_1 is the first token's action"
    assert torch.equal(pred_in_f[:, E:], pred_in[:, E:]), "earlier actions do not reach the predictor directly"


def test_no_gradient_reaches_target_encoder():
    model = _model()
    out = _forward(model, *_inputs(2))
    assert not out.target_emb.requires_grad
    out.loss.backward()
    assert all(not p.requires_grad and p.grad is None for p in model.target_encoder.parameters())
    assert all(p.grad is not None for p in model.encoder.parameters())


def test_without_ema_target_is_detached_online_encoder():
    model = _model(use_ema=False)
    assert model.target_encoder is None
    obs, target, actions = _inputs(2)
    out = _forward(model, obs, target, actions)
    assert not out.target_emb.requires_grad
    out.loss.backward()  # gradient flows through the observed views only
    model.eval()
    assert torch.allclose(_forward(model, obs, target, actions).target_emb, model.encoder(target))


def test_without_action_conditioning_widths():
    model = _model(action_cond=False)
    D = model.feature_dim
    assert model.token_dim == D and model.action_embedding is None
    seen = []
    _capture_inputs(model.predictor, seen)
    out = _forward(model, *_inputs(3))
    assert seen[0].shape == (B, D) and out.z_agg.shape == (B, D)
    assert _forward(model, _inputs(2)[0], _inputs(2)[1], None).z_agg.shape == (B, D)  # actions are not needed


def test_raw_action_variant_keeps_predictor_action_and_caller_tensor():
    model = _model(learn_action_embedding=False)
    D, E = model.feature_dim, model.token_dim
    assert model.action_embedding is None
    assert E % 4 == 0 and E == D + 8  # 32 + 5 raw dims, zero-padded to 8 for 4 heads
    obs, target, actions = _inputs(3)
    original = actions.clone()
    tokens, pred_in = [], []
    _capture_inputs(model.aggregator, tokens), _capture_inputs(model.predictor, pred_in)
    _forward(model, obs, target, actions)
    assert torch.equal(actions, original), (
        "the caller's action tensor must not be mutated "
        "(docs/paper-and-original-code.md#b4-raw-action-variant-zeroes-the-predictor-action)")
    assert torch.equal(pred_in[0][:, E:E + A], actions[:, -1]) and pred_in[0][:, E:E + A].abs().sum() > 0
    assert torch.all(pred_in[0][:, E + A:] == 0)
    assert torch.equal(tokens[0][:, 1, D:D + A], actions[:, 0]) and torch.all(tokens[0][:, -1, D:] == 0)


def test_action_embedding_has_no_bias_and_no_affine_bn():
    embedding = _model().action_embedding
    assert embedding.proj.bias is None
    assert embedding.bn.weight is None and embedding.bn.bias is None
    assert sum(p.numel() for p in embedding.parameters()) == A * 8


def test_transformer_layers_start_identical():
    layers = _model().aggregator.layers
    assert len(layers) == 2
    first = layers[0].state_dict()
    for layer in layers[1:]:
        assert all(torch.equal(first[k], v) for k, v in layer.state_dict().items())
    assert not layers[0].norm_first and layers[0].self_attn.batch_first


def test_aggregate_accepts_any_number_of_views():
    model = _model().eval()
    obs, target, actions = _inputs(3)
    out = _forward(model, obs, target, actions)
    assert torch.allclose(model.aggregate(out.z_enc, actions), out.z_agg, atol=1e-6)
    z_long = torch.randn(B, 7, model.feature_dim)
    assert model.aggregate(z_long, torch.randn(B, 7, A)).shape == (B, model.token_dim)


def test_single_view_aggregate_sees_no_action():
    model = _model().eval()
    out = _forward(model, *_inputs(3))
    z1_alone = model.aggregate(out.z_enc[:, :1], torch.randn(B, 1, A))  # any action: the only token gets 0
    assert torch.allclose(out.z_agg_single[:, 0], z1_alone, atol=1e-6)


def test_keep_last_action_gives_every_token_its_action():
    """Path integration (docs/paper-and-original-code.md#path-integration): token M carries a_M too, so z_AGG depends on
    it; the default does not."""
    model = _model().eval()
    z = torch.randn(B, 3, model.feature_dim)
    actions = torch.randn(B, 3, A)
    other_last = torch.cat([actions[:, :2], torch.randn(B, 1, A)], dim=1)
    seen = []
    _capture_inputs(model.aggregator, seen)
    kept = model.aggregate(z, actions, keep_last_action=True)
    assert torch.all(seen[0][:, 1:, model.feature_dim:].abs().sum(-1) > 0), "every token carries an action"
    assert not torch.allclose(kept, model.aggregate(z, other_last, keep_last_action=True))
    assert torch.allclose(model.aggregate(z, actions), model.aggregate(z, other_last), atol=1e-6)
    no_actions = _model(action_cond=False).eval()  # nothing to keep: the flag changes nothing
    assert torch.equal(no_actions.aggregate(z, actions, keep_last_action=True), no_actions.aggregate(z, actions))


def test_seq_jepa_as_one_method_among_others_keeps_its_loss_and_gradients():
    """Pinned before seq-JEPA became a `Method` (commit ad028cc, where it was bitwise equal on this project's
    CPU): the embedded default's model, seed 0, a fixed batch. The tolerance only allows for another CPU's kernels."""
    from trainer.config import load_config
    from trainer.methods.build import build_model

    torch.manual_seed(0)
    model = build_model(load_config(None, ["train.channels_last=false"]), action_dim=7, in_channels=1)
    g = torch.Generator().manual_seed(1)
    views, actions = torch.randn(8, 4, 1, 32, 32, generator=g), torch.randn(8, 3, 7, generator=g)
    out = model(views, actions)
    out.loss.backward()
    grad_norm = sum(p.grad.double().pow(2).sum() for p in model.parameters() if p.grad is not None).sqrt()
    assert out.loss.item() == pytest.approx(1.004951000213623, rel=1e-6)
    assert grad_norm.item() == pytest.approx(1.5695761379570063, rel=1e-5)
