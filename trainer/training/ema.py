"""EMA of the online encoder into the target encoder, shard-local under FSDP2
(docs/paper-and-original-code.md#ema-target)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributed.tensor import DTensor


def ema_decay_at(step: int, total_steps: int, base: float = 0.996, schedule: str = "cosine",
                 steps_per_epoch: int = 1) -> float:
    """Decay tau at `step`: cosine from `base` (step 0) to 1 (step = total_steps), or constant `base`.

    legacy_cosine_per_epoch is the authors' (docs/paper-and-original-code.md#ema-target): tau follows the epoch, not the
    step, and a step uses the value set after the step before it, so the first step of epoch e still uses epoch e-1's
    tau.
    """
    if schedule == "constant":
        return base
    if schedule == "legacy_cosine_per_epoch":
        epoch, epochs = (step - 1) // steps_per_epoch if step else 0, max(total_steps // steps_per_epoch, 1)
        return 1 - (1 - base) * (math.cos(math.pi * epoch / epochs) + 1) / 2
    if schedule != "cosine":
        raise ValueError(f"unknown EMA schedule '{schedule}' (expected 'cosine', 'constant' or "
                         "'legacy_cosine_per_epoch')")
    progress = min(step / max(total_steps, 1), 1.0)
    return 1 - (1 - base) * (math.cos(math.pi * progress) + 1) / 2


def _local(t: torch.Tensor) -> torch.Tensor:
    # FSDP2 shards both encoders with the same layout, so each rank's local shards correspond one to one.
    return t.to_local() if isinstance(t, DTensor) else t


@torch.no_grad()
def ema_update_(target: nn.Module, online: nn.Module, decay: float) -> None:
    """theta_t <- decay * theta_t + (1 - decay) * theta_o, over parameters only, without communication.

    The authors' arithmetic exactly: two rounded products, then their rounded sum. (`torch.lerp` computes
    t + w * (o - t), which leaves about a quarter of the elements one ulp away after one step, and the online
    weights drift off theirs within three: tests/unit/training/test_ema.py.) BN buffers are not copied: the
    target's running statistics evolve through its own forwards, as in the paper's code.
    """
    target_params = [_local(p) for p in target.parameters()]
    online_params = [_local(p) for p in online.parameters()]
    if len(target_params) != len(online_params):
        raise ValueError("target and online modules have different parameter lists")
    torch._foreach_mul_(target_params, decay)
    torch._foreach_add_(target_params, torch._foreach_mul(online_params, 1 - decay))
