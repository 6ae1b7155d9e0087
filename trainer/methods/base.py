"""What every training method gives the trainer: one forward from a batch of view sequences to a loss and the
embeddings the probes read, plus the modules the trainer EMA-updates and shards."""

from __future__ import annotations

import abc
import copy
from typing import TYPE_CHECKING, ClassVar, NamedTuple, Optional

import torch
from torch import nn

from trainer.methods.catalog import method_entry

if TYPE_CHECKING:
    from trainer.config import Config


class MethodOutput(NamedTuple):  # a NamedTuple so that DDP/FSDP2 find the tensors inside
    loss: torch.Tensor  # scalar float32: what the optimizer minimises
    z1: torch.Tensor  # (B, D) online encoder output of view 1 (classification probe; pair probe)
    z2: torch.Tensor  # (B, D) online encoder output of view 2 (pair probe: relative action 1 -> 2); cond. BYOL:
    # the EMA target encoder's, as the authors
    z_agg: Optional[torch.Tensor] = None  # (B, E) aggregate over the observed views (methods with an aggregate)
    z_agg_single: Optional[torch.Tensor] = None  # (B, 2, E) aggregate of view 1 alone / view 2 alone
    logs: Optional[dict[str, torch.Tensor]] = None  # the loss's terms as detached scalars, by name: logged as
    # train/loss/<name> (VICReg's invariance, variance, covariance; seq-JEPA's prediction; ...)


class Method(nn.Module, abc.ABC):
    """A self-supervised method over an online encoder.

    Every method is built as `cls(encoder, action_dim, settings, action_proj_dim)`, `settings` its config
    section's dataclass (trainer/methods/catalog.py), so `build_method` can build any of them; a method that
    does not condition on actions ignores `action_dim` and `action_proj_dim`. What it needs of the data and
    whether it has an aggregate are in its catalogue entry.
    """

    name: ClassVar[str]  # the `model.method` value: its catalogue entry
    aggregate_dim: Optional[int] = None  # the width of z_AGG, for a method with an aggregate
    encoder: nn.Module  # the online encoder, the one the probes read

    @classmethod
    def from_config(cls, encoder: nn.Module, action_dim: int, config: Config) -> Method:
        """The method a run's config describes: its own section and the shared action embedding width."""
        return cls(encoder, action_dim, config.method, config.model.action_proj_dim)

    @property
    def min_views(self) -> int:
        """Views per sequence it needs (the loader gives V = model.seq_len + 1 views)."""
        return method_entry(self.name).views

    @property
    def has_aggregate(self) -> bool:
        return method_entry(self.name).aggregate

    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(target, online) modules the trainer EMA-updates after every optimizer step; [] = no EMA target."""
        return []

    def shard_units(self) -> list[nn.Module]:
        """Head submodules FSDP2 wraps one by one before the root (encoders are handled separately)."""
        return []

    @abc.abstractmethod
    def forward(self, views: torch.Tensor, rel_actions: torch.Tensor,
                abs_actions: Optional[torch.Tensor] = None) -> MethodOutput:
        """views (B, V, C, H, W) normalised; rel_actions (B, V-1, A), rel_actions[:, j] = action view j -> j+1;
        abs_actions (B, V, A) the views' own latents, read only by seq-JEPA's legacy raw-action variant."""

    def first_pair(self, views: torch.Tensor,
                   rel_actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Views 0 and 1 and the action 0 -> 1: what the pairwise methods train on
        (docs/paper-and-original-code.md#baselines)."""
        self.require_views(views)
        return views[:, 0], views[:, 1], rel_actions[:, 0]

    def encode_first_pair(self, views: torch.Tensor,
                          rel_actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The online encoder's outputs for views 0 and 1, one call per view (BatchNorm statistics per view, as
        the authors), and the action 0 -> 1."""
        x1, x2, action = self.first_pair(views, rel_actions)
        return self.encoder(x1), self.encoder(x2), action

    def require_views(self, views: torch.Tensor) -> None:
        if views.dim() != 5 or views.shape[1] < self.min_views:
            raise ValueError(f"{self.name} needs views of shape (B, V>={self.min_views}, C, H, W), "
                             f"got {tuple(views.shape)}")


def frozen_copy(module: nn.Module) -> nn.Module:
    """An EMA target: a deep copy with the online module's parameter order and shapes, never trained."""
    return copy.deepcopy(module).requires_grad_(False)


def detached(**terms: torch.Tensor) -> dict[str, torch.Tensor]:
    """Loss terms for `MethodOutput.logs`: detached float32 scalars."""
    return {name: value.detach().float() for name, value in terms.items()}
