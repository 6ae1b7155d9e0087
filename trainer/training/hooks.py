"""What runs after each training step besides the step itself, switched on by the config: fault injection
(`faults.*`, for tests) and the sample log (`train.sample_log`). The loop calls `after_step` on each."""

from __future__ import annotations

import os
from typing import Protocol

from trainer.config import Config
from trainer.training.sample_log import SampleLog


class StepHook(Protocol):
    def after_step(self, epoch: int, step: int, batch: dict) -> None: ...


class ExitAtStep:
    """This worker process dies right after `step`, like an OOM-killed one: mid-epoch, no cleanup."""

    def __init__(self, step: int):
        self.step = step

    def after_step(self, epoch: int, step: int, batch: dict) -> None:
        if step == self.step:
            os._exit(1)


def build_hooks(config: Config, rank: int, world: int, restored: bool) -> list[StepHook]:
    hooks: list[StepHook] = []
    if config.train.sample_log:
        hooks.append(SampleLog(config.train.sample_log, rank))
    exit_rank = world - 1 if config.faults.exit_rank is None else config.faults.exit_rank
    # Only in a run that did not start from a checkpoint, so a restored group goes on.
    if config.faults.exit_at_step is not None and not restored and rank == exit_rank:
        hooks.append(ExitAtStep(config.faults.exit_at_step))
    return hooks
