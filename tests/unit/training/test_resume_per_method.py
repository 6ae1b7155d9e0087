"""One method per family (contrastive, EMA + predictor, variance-covariance, hyper-network): the trainer's step in
fp32 and bf16, and a state saved mid-epoch and restored continues exactly as if never interrupted."""

from __future__ import annotations

import shutil

import pytest
import torch

from tests.helpers.runs import tiny_overrides
from trainer.config import load_config, to_dict
from trainer.data import build_loader, normalisation, to_device
from trainer.training.setup import train_state_for
from trainer.training.step import train_step

CPU = torch.device("cpu")
FAMILIES = {"contrastive": "simclr", "EMA and predictor": "byol", "variance-covariance": "vicreg",
            "hyper-network": "sie"}


def _config(shards, tmp_path, method: str):
    overrides = tiny_overrides(shards, tmp_path / "runs", f"sqlite:///{tmp_path / 'mlflow.db'}", method, method)
    return load_config(None, overrides + [f"{method}.projector_dims=[64, 32]",
                                          "scaling.num_workers=1", "data.batch_size=16"])


def _fresh(config):
    loader = build_loader(config, "train", 0, 1)
    loader.set_epoch(0)
    return train_state_for(config, loader, CPU), normalisation(loader, CPU)


def _train(state, normalise, steps: int, bf16: bool) -> list[float]:
    losses, batches = [], iter(state.loader)
    for _ in range(steps):
        batch = to_device(next(batches), CPU, *normalise)
        losses.append(float(train_step(state, batch, 1e-3, 0.99, None, bf16)["train/loss"]))
        state.step, state.batches_done = state.step + 1, state.batches_done + 1
    return losses


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
@pytest.mark.parametrize("method", FAMILIES.values())
def test_a_state_restored_mid_epoch_continues_exactly(method, bf16, fashion_mnist_shards, tmp_path):
    config = _config(fashion_mnist_shards, tmp_path, method)
    reference = _train(*_fresh(config), steps=4, bf16=bf16)
    assert all(torch.isfinite(torch.tensor(reference)))

    interrupted, normalise = _fresh(config)
    first = _train(interrupted, normalise, steps=2, bf16=bf16)
    folder = interrupted.save(to_dict(config), world=1, epoch_done=False)
    checkpoint = tmp_path / "run" / "checkpoint_1"
    shutil.move(str(folder), checkpoint)

    resumed, normalise = _fresh(config)
    resumed.restore(checkpoint, config.train.seed, rank=0, world=1)
    assert (resumed.step, resumed.batches_done) == (2, 2)
    rest = _train(resumed, normalise, steps=2, bf16=bf16)
    assert first + rest == reference  # the same losses, step by step

    uninterrupted, normalise = _fresh(config)
    _train(uninterrupted, normalise, steps=4, bf16=bf16)
    for key, value in uninterrupted.model.state_dict().items():  # EMA targets and BN statistics included
        assert torch.equal(value, resumed.model.state_dict()[key]), key
