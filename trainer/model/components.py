"""The three small parts of seq-JEPA around the encoder: action embedding, aggregator, predictor
(docs/paper-and-original-code.md#action-projection, #tokens-and-agg, #aggregator, #predictor)."""

from __future__ import annotations

import torch
from torch import nn

from trainer.model.batchnorm import BatchNorm1d


class ActionEmbedding(nn.Module):
    """g(a) = BN(W a): no bias, and a BN without affine parameters, as in the paper's code
    (docs/paper-and-original-code.md#action-projection)."""

    def __init__(self, action_dim: int, out_dim: int):
        super().__init__()
        self.proj = nn.Linear(action_dim, out_dim, bias=False)
        self.bn = BatchNorm1d(out_dim, affine=False)
        self.out_dim = out_dim

    def forward(self, actions: torch.Tensor) -> torch.Tensor:
        """(..., A) -> (..., P); all leading rows share one BN batch."""
        flat = actions.reshape(-1, actions.shape[-1])
        return self.bn(self.proj(flat)).reshape(*actions.shape[:-1], self.out_dim)


class RawAction(nn.Module):
    """The action as it is, where a method could learn an embedding instead (SEN and EquiMod with
    `learn_action_embedding=false`, the authors' --learn-act-emb 0): no parameters."""

    def __init__(self, action_dim: int):
        super().__init__()
        self.out_dim = action_dim

    def forward(self, actions: torch.Tensor) -> torch.Tensor:
        return actions


def action_input(action_dim: int, embedding_dim: int, learned: bool) -> ActionEmbedding | RawAction:
    """What a predictor reads of the action: its learned embedding g(a), or the raw action."""
    return ActionEmbedding(action_dim, embedding_dim) if learned else RawAction(action_dim)


class Aggregator(nn.TransformerEncoder):
    """Post-LN transformer encoder + an extra final LayerNorm; no positional encoding
    (docs/paper-and-original-code.md#aggregator).

    nn.TransformerEncoder deep-copies the layer, so all layers start from identical weights, as in the
    official code. `self.layers` is the per-block list a sharding wrapper wraps one by one.
    """

    def __init__(self, width: int, num_heads: int, num_layers: int, mlp_ratio: float, dropout: float):
        layer = nn.TransformerEncoderLayer(d_model=width, nhead=num_heads, dim_feedforward=int(mlp_ratio * width),
                                           dropout=dropout, activation="relu", batch_first=True, norm_first=False)
        super().__init__(layer, num_layers, norm=nn.LayerNorm(width), enable_nested_tensor=False)


class Predictor(nn.Module):
    """Linear(no bias) -> BN -> ReLU -> Linear; with hidden <= 0 a single Linear(no bias) -> BN
    (docs/paper-and-original-code.md#predictor)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int):
        super().__init__()
        if hidden > 0:
            self.net = nn.Sequential(nn.Linear(in_dim, hidden, bias=False), BatchNorm1d(hidden), nn.ReLU(inplace=True),
                                     nn.Linear(hidden, out_dim))
        else:
            self.net = nn.Sequential(nn.Linear(in_dim, out_dim, bias=False), BatchNorm1d(out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
