"""One optimisation step, start to end: batch -> model and probe losses -> one backward -> both optimizer steps
-> EMA update."""

from __future__ import annotations

import torch
from torch.distributed.tensor import DTensor

from trainer.metric_names import GRAD_NORM, LOSS_TERM_PREFIX, TRAIN_LOSS
from trainer.training.ema import ema_update_
from trainer.training.optim import set_lr
from trainer.training.parallel import unwrap
from trainer.training.precision import autocast
from trainer.training.probes import probe_features, probe_loss
from trainer.training.state import TrainState


def train_step(state: TrainState, batch: dict, lr: float, ema_decay: float, grad_clip: float | None,
               bf16: bool) -> dict[str, torch.Tensor]:
    """`batch` is on the device and normalised (`trainer.data.to_device`); returns the step's metrics as detached
    device scalars: the loss, its terms as the method reports them, the gradient norm before clipping."""
    rel_actions = batch["rel_actions"]
    set_lr(state.optimizer, lr)
    with autocast(state.device, bf16):
        out = state.model(batch["views"], rel_actions, batch["actions"])
    # The probes learn from detached features (no gradient reaches the model) with their own optimizer, in the
    # same backward as the model: their loss's graph shares no node with the model's, so the model's gradients are
    # those of out.loss alone, bit for bit (tests/unit/training/test_step.py).
    pred = state.probes(probe_features(out))
    probes_loss = probe_loss(pred, batch["label"], rel_actions[:, 0].float())
    state.optimizer.zero_grad(set_to_none=True)
    state.probe_optimizer.zero_grad(set_to_none=True)
    torch.autograd.backward((out.loss, probes_loss))
    grad_norm = gradient_norm(state.model, grad_clip)
    state.optimizer.step()
    state.probe_optimizer.step()

    for target, online in unwrap(state.model).ema_pairs():
        ema_update_(target, online, ema_decay)
    terms = {f"{LOSS_TERM_PREFIX}{name}": value for name, value in (out.logs or {}).items()}
    return {TRAIN_LOSS: out.loss.detach().float(), GRAD_NORM: grad_norm, **terms}


def gradient_norm(model: torch.nn.Module, clip: float | None) -> torch.Tensor:
    """The global L2 norm of the gradients (over every rank's shards), clipping them to `clip` if given; no host
    sync. Without clipping the gradients are left untouched."""
    params = [p for p in model.parameters() if p.grad is not None]
    if clip is not None:
        norm = torch.nn.utils.clip_grad_norm_(params, clip)
    else:
        norm = torch.nn.utils.get_total_norm([p.grad for p in params])
    if isinstance(norm, DTensor):  # FSDP2: each rank holds the norm of its shards
        norm = norm.full_tensor()
    return norm.detach().float()


def synthetic_batch(batch: int, num_views: int, channels: int, side: int, action_dim: int, num_classes: int,
                    device: torch.device, seed: int = 0) -> dict:
    """A device batch of random normalised views, actions and labels: a step timed or counted without data."""
    g = torch.Generator().manual_seed(seed)
    return {"views": torch.randn(batch, num_views, channels, side, side, generator=g).to(device),
            "rel_actions": torch.randn(batch, num_views - 1, action_dim, generator=g).to(device),
            "actions": torch.randn(batch, num_views, action_dim, generator=g).to(device),
            "label": torch.randint(0, num_classes, (batch,), generator=g).to(device)}
