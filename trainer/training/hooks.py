"""What runs around each training step besides the step itself, switched on by the config's `debug.*` section:
fault injection (`exit_at_step`, `nan_at_step`) and the sample log (`sample_log`). The loop calls `before_step`
and `after_step` on each."""

from __future__ import annotations

import json
import os
from pathlib import Path

from trainer.config import Config


class StepHook:
    """Called around each training step; does nothing unless a subclass says otherwise."""

    def before_step(self, step: int, batch: dict) -> None:
        """`step` is about to train on `batch` (on the device, normalised)."""

    def after_step(self, epoch: int, step: int, batch: dict) -> None:
        """`step` has trained on `batch`."""


class SampleLog(StepHook):
    """Appends each step's sample keys to `<folder>/rank<r>.jsonl` (read back by `sample_log.read_sample_log`)."""

    def __init__(self, folder: str, rank: int):
        Path(folder).mkdir(parents=True, exist_ok=True)
        self.path = Path(folder) / f"rank{rank}.jsonl"

    def after_step(self, epoch: int, step: int, batch: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps({"epoch": epoch, "step": step, "keys": batch["sample_keys"]}) + "\n")


class ExitAtStep(StepHook):
    """This worker process dies right after `step`, like an OOM-killed one: mid-epoch, no cleanup."""

    def __init__(self, step: int):
        self.step = step

    def after_step(self, epoch: int, step: int, batch: dict) -> None:
        if step == self.step:
            os._exit(1)


class NanAtStep(StepHook):
    """The batch of `step` holds a NaN view, so that step's loss (and the update it makes) is NaN: a diverged run."""

    def __init__(self, step: int):
        self.step = step

    def before_step(self, step: int, batch: dict) -> None:
        if step == self.step:
            batch["views"][0, 0].fill_(float("nan"))


def build_hooks(config: Config, rank: int, world: int, restored: bool) -> list[StepHook]:
    hooks: list[StepHook] = []
    debug = config.debug
    if debug.sample_log:
        hooks.append(SampleLog(debug.sample_log, rank))
    exit_rank = world - 1 if debug.exit_rank is None else debug.exit_rank
    # Only in a run that did not start from a checkpoint, so a restored group goes on.
    if debug.exit_at_step is not None and not restored and rank == exit_rank:
        hooks.append(ExitAtStep(debug.exit_at_step))
    if debug.nan_at_step is not None and not restored:
        hooks.append(NanAtStep(debug.nan_at_step))
    return hooks
