"""One optimisation step, start to end: batch -> loss -> optimizer step -> EMA update -> probe update."""

from __future__ import annotations

import torch

from trainer.training.ema import ema_update_
from trainer.training.optim import set_lr
from trainer.training.parallel import unwrap
from trainer.training.precision import autocast
from trainer.training.probes import probe_features, probe_loss
from trainer.training.state import TrainState


def train_step(state: TrainState, batch: dict, lr: float, ema_decay: float, grad_clip: float | None,
               bf16: bool) -> torch.Tensor:
    """`batch` is on the device and normalised (`trainer.data.to_device`); returns the detached float32 loss."""
    rel_actions = batch["rel_actions"]
    set_lr(state.optimizer, lr)
    with autocast(state.device, bf16):
        out = state.model(batch["views"], rel_actions, batch["actions"])
    state.optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(state.model.parameters(), grad_clip)
    state.optimizer.step()

    for target, online in unwrap(state.model).ema_pairs():
        ema_update_(target, online, ema_decay)

    # Probes learn from detached features with their own optimizer: no gradient reaches the model.
    pred = state.probes(probe_features(out))
    loss = probe_loss(pred, batch["label"], rel_actions[:, 0].float())
    state.probe_optimizer.zero_grad(set_to_none=True)
    loss.backward()
    state.probe_optimizer.step()
    return out.loss.detach().float()


def synthetic_batch(batch: int, num_views: int, channels: int, side: int, action_dim: int, num_classes: int,
                    device: torch.device, seed: int = 0) -> dict:
    """A device batch of random normalised views, actions and labels: a step timed or counted without data."""
    g = torch.Generator().manual_seed(seed)
    return {"views": torch.randn(batch, num_views, channels, side, side, generator=g).to(device),
            "rel_actions": torch.randn(batch, num_views - 1, action_dim, generator=g).to(device),
            "actions": torch.randn(batch, num_views, action_dim, generator=g).to(device),
            "label": torch.randint(0, num_classes, (batch,), generator=g).to(device)}
