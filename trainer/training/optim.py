"""Optimizer with weight-decay groups and the learning-rate schedule
(docs/paper-and-original-code.md#the-original-optimiser, #effective-learning-rate-schedule)."""

from __future__ import annotations

import math

import torch
from torch import nn

from trainer.config import OptimConfig


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """Weights (ndim >= 2, incl. the [AGG] token) decay; biases and norm parameters do not."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    optimizer_cls = torch.optim.AdamW if cfg.name == "adamw" else torch.optim.Adam
    return optimizer_cls(groups, lr=cfg.lr)


def lr_at(step: int, steps_per_epoch: int, total_steps: int, cfg: OptimConfig) -> float:
    """Learning rate for optimizer step `step` (0-based).

    cosine: per-step linear warm-up from start_lr to lr, then cosine decay to final_lr.
    legacy_constant: the official code's effective behaviour, a per-epoch warm-up and then a
    constant lr (its cosine scheduler is overwritten at every epoch start,
    docs/paper-and-original-code.md#effective-learning-rate-schedule).
    lr = 0 is the untrained floor of a comparison: 0 at every step, whatever start_lr and final_lr say.
    """
    if cfg.lr == 0:
        return 0.0
    if cfg.schedule == "legacy_constant":
        epoch = step // max(steps_per_epoch, 1)
        if epoch < cfg.warmup_epochs:
            return cfg.start_lr + (cfg.lr - cfg.start_lr) * epoch / cfg.warmup_epochs
        return cfg.lr
    warmup_steps = int(round(cfg.warmup_epochs * steps_per_epoch))
    if step < warmup_steps:
        return cfg.start_lr + (cfg.lr - cfg.start_lr) * step / warmup_steps
    decay_steps = max(total_steps - warmup_steps, 1)
    progress = min((step - warmup_steps) / decay_steps, 1.0)
    return cfg.final_lr + (cfg.lr - cfg.final_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
