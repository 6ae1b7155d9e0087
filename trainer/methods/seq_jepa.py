"""seq-JEPA (Ghaemi et al., NeurIPS 2025; docs/paper-and-original-code.md#model): the method this project is about, one
`Method` among others.

Encode M observed views -> pair each view embedding with the action that leaves it (the last view gets a zero
action) -> prepend [AGG] -> transformer -> z_AGG -> predict the embedding of view M+1 from z_AGG and the
action view M -> M+1 -> cosine loss against the (EMA) target encoder's embedding of view M+1.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn

from trainer.methods.base import Method, detached
from trainer.methods.catalog import SeqJEPASettings
from trainer.model.components import ActionEmbedding, Aggregator, Predictor


class SeqJEPAOutput(NamedTuple):  # a MethodOutput with more: its first six fields are the interface's
    loss: torch.Tensor  # scalar, float32: 1 - mean cosine(prediction, target_emb)
    z1: torch.Tensor  # (B, D) online encoder output of view 1 (docs/paper-and-original-code.md#returned-tensors)
    z2: torch.Tensor  # (B, D) of view 2, or the target's embedding of the prediction view when M = 1
    z_agg: torch.Tensor  # (B, E) the [AGG] output over the M observed views
    z_agg_single: torch.Tensor  # (B, 2, E) z_AGG of view 1 alone and of view 2 alone, no grad (leakage probe)
    logs: dict[str, torch.Tensor]  # {"prediction": the loss, detached}
    z_enc: torch.Tensor  # (B, M, D) online encoder outputs of the observed views
    target_emb: torch.Tensor  # (B, D) target encoder output of view M+1, detached
    prediction: torch.Tensor  # (B, D)


def _pad_to_multiple(dim: int, extra: int, multiple: int) -> int:
    """The smallest width >= extra such that dim + width is divisible by `multiple`."""
    return extra + (-(dim + extra)) % multiple


class SeqJEPA(Method):
    name = "seq_jepa"

    def __init__(self, encoder: nn.Module, action_dim: int, settings: Optional[SeqJEPASettings] = None,
                 action_proj_dim: int = 128, *, use_ema: bool = True, **setting_values):
        """`settings`: its config section (defaults if None); keywords set single settings of it instead
        (`SeqJEPA(encoder, 4, num_layers=1)`); `use_ema`: ema.enabled."""
        super().__init__()
        s = dataclasses.replace(settings or SeqJEPASettings(), **setting_values)
        self.action_cond = s.action_cond
        self.learn_action_embedding = s.learn_action_embedding
        # The authors' augmentation/PLS path (README, differences;
        # docs/paper-and-original-code.md#last-token-action, #variants, #a8-batchnorm-batch-composition): B zero rows
        # in the action BN's batch, and the raw-action variant on absolute latents.
        self.legacy_action_bn_zeros = s.legacy_action_bn_zeros
        self.legacy_absolute_raw_actions = s.legacy_absolute_raw_actions
        self.feature_dim = encoder.out_dim  # D
        self.encoder = encoder
        self.target_encoder = None  # without EMA the target is the online encoder, detached
        if use_ema:
            self.target_encoder = copy.deepcopy(encoder).requires_grad_(False)

        # Width of the action part of a token (0 without action conditioning).
        self.action_embedding = None
        if not s.action_cond:
            self.action_width = 0
        elif s.learn_action_embedding:
            self.action_embedding = ActionEmbedding(action_dim, action_proj_dim)
            self.action_width = action_proj_dim
        else:  # raw actions, zero-padded so that the token width splits evenly over the heads
            self.action_width = _pad_to_multiple(self.feature_dim, action_dim, s.num_heads)
        self.token_dim = self.feature_dim + self.action_width  # E
        self.aggregate_dim = self.token_dim

        self.agg_token = nn.Parameter(torch.zeros(1, 1, self.token_dim))
        self.aggregator = Aggregator(self.token_dim, s.num_heads, s.num_layers, s.mlp_ratio, s.dropout)
        self.predictor = Predictor(self.token_dim + self.action_width, s.pred_hidden, self.feature_dim)

    @classmethod
    def from_config(cls, encoder: nn.Module, action_dim: int, config) -> SeqJEPA:
        return cls(encoder, action_dim, config.method, config.model.action_proj_dim, use_ema=config.ema.enabled)

    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [] if self.target_encoder is None else [(self.target_encoder, self.encoder)]

    def shard_units(self) -> list[nn.Module]:
        return list(self.aggregator.layers)

    def forward(self, views: torch.Tensor, rel_actions: Optional[torch.Tensor],
                abs_actions: Optional[torch.Tensor] = None) -> SeqJEPAOutput:
        """views (B, M+1, C, H, W): M observed views, then the prediction target; rel_actions (B, M, A), [:, j] is
        the action view j -> j+1; abs_actions (B, M+1, A), read by the legacy absolute raw-action variant only."""
        self.require_views(views)
        obs_views, target_view = views[:, :-1], views[:, -1]
        B, M = obs_views.shape[:2]
        # One encoder call over all B*M observed views: BN statistics are shared, as in the paper's code.
        z_enc = self.encoder(obs_views.flatten(0, 1)).view(B, M, -1)
        target_emb = self._encode_target(target_view)

        # The action from the last observed view to the target, in its own BN batch and projected before the
        # tokens' actions, as the authors do: the order of the two BN calls sets the running statistics.
        predictor_action = self._predictor_action(rel_actions, abs_actions, M) if self.action_cond else None
        z_agg = self._aggregate(z_enc, rel_actions, abs_actions)
        z_agg_and_action = z_agg if predictor_action is None else torch.cat([z_agg, predictor_action], dim=-1)
        prediction = self.predictor(z_agg_and_action)
        loss = 1 - F.cosine_similarity(prediction.float(), target_emb.float(), dim=-1).mean()

        z1, z2 = z_enc[:, 0], (z_enc[:, 1] if M >= 2 else target_emb)
        with torch.no_grad():
            z_agg_single = self._single_view_aggregates(z1, z2)
        return SeqJEPAOutput(loss, z1, z2, z_agg, z_agg_single, detached(prediction=loss), z_enc, target_emb,
                             prediction)

    @torch.no_grad()
    def aggregate(self, z_enc: torch.Tensor, rel_actions: Optional[torch.Tensor],
                  abs_actions: Optional[torch.Tensor] = None, *, keep_last_action: bool = False) -> torch.Tensor:
        """z_AGG for (B, M, D) encoder outputs and their (B, M, A) actions, for any M (no positional encoding).

        As in training the last token carries a zero action; `keep_last_action=True` gives it a_M too, so
        z_AGG has seen every step of the path view 1 -> view M+1
        (path integration, docs/paper-and-original-code.md#path-integration).
        Runs in the module's current mode: call `model.eval()` first for evaluation.
        """
        return self._aggregate(z_enc, rel_actions, abs_actions, keep_last_action)

    def _encode_target(self, target_view: torch.Tensor) -> torch.Tensor:
        # The target runs in the module's mode (train mode during training: batch statistics, as in the paper).
        encoder = self.target_encoder if self.target_encoder is not None else self.encoder
        with torch.no_grad():
            return encoder(target_view).detach()

    def _embed_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """(..., A) -> (..., action_width): the learned embedding g(a), or the raw action zero-padded."""
        if self.action_embedding is not None:
            return self.action_embedding(actions)
        return F.pad(actions, (0, self.action_width - actions.shape[-1]))

    def _predictor_action(self, rel_actions: Optional[torch.Tensor], abs_actions: Optional[torch.Tensor],
                          M: int) -> torch.Tensor:
        """The embedded action view M -> M+1 (B, action_width); the legacy raw variant: view M+1's absolute latent."""
        return self._embed_actions(abs_actions[:, M] if self.legacy_absolute_raw_actions else rel_actions[:, M - 1])

    def _token_actions(self, rel_actions: torch.Tensor, abs_actions: Optional[torch.Tensor] = None,
                       keep_last_action: bool = False) -> torch.Tensor:
        """(B, M, A) -> (B, M, action_width): token j carries the action leaving view j; the last token carries 0
        unless `keep_last_action`."""
        M = rel_actions.shape[1]
        if self.legacy_absolute_raw_actions:  # every token its view's absolute latent, none zeroed
            # (docs/paper-and-original-code.md#variants)
            return self._embed_actions(abs_actions[:, :M])
        if self.legacy_action_bn_zeros and not keep_last_action:  # a_M replaced by zeros before the action BN
            rel_actions = torch.cat([rel_actions[:, :-1], torch.zeros_like(rel_actions[:, -1:])], dim=1)
        embedded = self._embed_actions(rel_actions)  # all M in one call: a_M shares the BN batch
        # (docs/paper-and-original-code.md#last-token-action)
        if keep_last_action:
            return embedded
        # A new tensor, never an in-place write: the caller's actions stay intact
        # (fixes docs/paper-and-original-code.md#b4-raw-action-variant-zeroes-the-predictor-action).
        return torch.cat([embedded[:, :-1], torch.zeros_like(embedded[:, -1:])], dim=1)

    def _aggregate(self, z_enc: torch.Tensor, rel_actions: Optional[torch.Tensor],
                   abs_actions: Optional[torch.Tensor] = None, keep_last_action: bool = False) -> torch.Tensor:
        tokens = z_enc
        if self.action_cond:
            actions = self._token_actions(rel_actions, abs_actions, keep_last_action)
            tokens = torch.cat([z_enc, actions.to(z_enc.dtype)], dim=-1)
        return self._run_aggregator(tokens)

    def _run_aggregator(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, M, E) tokens -> [AGG] + tokens -> transformer -> the [AGG] output (B, E)."""
        agg = self.agg_token.expand(tokens.shape[0], -1, -1).to(tokens.dtype)
        return self.aggregator(torch.cat([agg, tokens], dim=1))[:, 0]

    def _single_view_aggregates(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        """z_AGG of a one-token sequence (zero action) for each view: (B, D) x 2 -> (B, 2, E)."""
        B = z1.shape[0]
        tokens = torch.cat([z1, z2], dim=0).unsqueeze(1)  # (2B, 1, D), both views in one call
        if self.action_cond:
            tokens = F.pad(tokens, (0, self.action_width))  # the last (only) token carries a zero action
        return self._run_aggregator(tokens).view(2, B, -1).transpose(0, 1)
