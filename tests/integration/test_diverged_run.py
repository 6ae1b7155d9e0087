"""A training loss that turns NaN never reaches a checkpoint: the run stops with one line naming the step (the window
that notes the step: tests/unit/training/test_diverged.py)."""

from __future__ import annotations

import pytest
import torch
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

from tests.helpers.runs import run_checkpoints, tiny_overrides
from trainer.checkpointing.dcp import read_trainer_state

pytestmark = pytest.mark.integration


def test_a_nan_between_two_logging_windows_stops_the_run_before_its_next_checkpoint(
        ray_local, fashion_mnist_shards, tmp_path, mlflow_uri, capsys):
    from trainer.run import main

    name = "diverges"
    # Checkpoints every 2 steps, a logging window of 10: the NaN of step 3 falls between two windows, and the
    # step 4 checkpoint would have stored the weights it made.
    overrides = tiny_overrides(fashion_mnist_shards, tmp_path / "runs", mlflow_uri, name) + [
        "train.epochs=1", "train.steps_per_epoch=6", "train.log_every_steps=10", "train.checkpoint_every_steps=2",
        "debug.nan_at_step=3", "tracking.log_model=false"]
    assert main(overrides) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert errors == ["error: the training loss became NaN or infinite at step 3; stopped without checkpointing it "
                      "(the run keeps the step 2 checkpoint): lower optim.lr or set optim.grad_clip, then run again"]
    checkpoints = run_checkpoints(tmp_path / "runs", name)
    assert [read_trainer_state(folder)["step"] for folder in checkpoints] == [2]
    dcp_to_torch_save(checkpoints[0], tmp_path / "kept.pt")
    weights = torch.load(tmp_path / "kept.pt", weights_only=False)["train"]["model"]["weights"]
    assert weights and all(torch.isfinite(w).all() for w in weights.values() if torch.is_tensor(w))
