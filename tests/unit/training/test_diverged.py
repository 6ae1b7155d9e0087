"""The logging window notes the first step whose training loss is not finite, without reading the device; the run that
stops there is tests/integration/test_diverged_run.py."""

from __future__ import annotations

import math

import torch

from trainer.metric_names import TRAIN_LOSS
from trainer.training.state import MetricWindow
from trainer.training.sums import NamedSums


def test_the_window_keeps_the_first_non_finite_step_without_reading_the_device():
    window = MetricWindow(NamedSums("cpu"))
    for step, loss in [(7, 0.5), (8, math.nan), (9, math.inf), (10, 0.25)]:
        window.add_step(step, {TRAIN_LOSS: torch.tensor(loss), "train/grad_norm": torch.tensor(1.0)})
    assert float(window.nonfinite) == 2 and float(window.first_nonfinite) == 8
    assert float(window.means()["train/grad_norm"]) == 1.0
    window.reset()
    window.add_step(11, {TRAIN_LOSS: torch.tensor(0.1)})
    assert float(window.nonfinite) == 0 and math.isinf(float(window.first_nonfinite))
