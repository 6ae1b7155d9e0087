"""What only a GPU exercises: the bf16 step, channels_last convolutions, CUDA random draws through a checkpoint.

Each check is one function of the device; the `gpu` tests run it on CUDA (scripts/gpu_check.sh), and where the
same property holds on the CPU a plain test runs it there, so the check itself is exercised on every machine.
"""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F

from data_pipeline import build_sequence_loader
from data_pipeline.sources.affine import AffineComposer
from tests.helpers.shards import IDENTITY, SIDE, make_shards
from trainer.config import load_config, to_dict
from trainer.training.setup import build_train_state, train_state_for
from trainer.training.step import synthetic_batch, train_step

TINY = ["model.encoder=convnet", "model.conv_width=8", "model.action_proj_dim=16", "seq_jepa.num_layers=1",
        "seq_jepa.pred_hidden=64", "probe.hidden=32", "data.batch_size=8"]


def one_step_losses(device: torch.device, overrides: list[str], bf16: bool, side: int = 32) -> list[float]:
    """Two steps of the trainer's step from the same initial weights and batch."""
    config = load_config(None, overrides)
    state = build_train_state(config, device, action_dim=4, channels=3, num_classes=10)
    batch = synthetic_batch(16, config.model.seq_len + 1, 3, side, 4, 10, device)
    return [train_step(state, batch, 1e-3, 0.99, None, bf16)["train/loss"].item() for _ in range(2)]


def bf16_step_tracks_fp32(device: torch.device) -> None:
    fp32, bf16 = one_step_losses(device, TINY, False), one_step_losses(device, TINY, True)
    assert all(torch.isfinite(torch.tensor(bf16)))
    assert bf16 == pytest.approx(fp32, rel=0.05, abs=0.02)  # autocast: BatchNorm statistics and the loss stay fp32


def channels_last_convolutions_give_the_same_step(device: torch.device) -> None:
    seen = []
    config = load_config(None, ["model.encoder=resnet18", "model.cifar_stem=true", "train.channels_last=true"])
    state = build_train_state(config, device, action_dim=4, channels=3, num_classes=10)
    state.model.encoder.conv1.register_forward_hook(
        lambda _m, inputs, _o: seen.append(inputs[0].is_contiguous(memory_format=torch.channels_last)))
    batch = synthetic_batch(4, 4, 3, 32, 4, 10, device)
    with_cl = train_step(state, batch, 1e-3, 0.99, None, False)["train/loss"].item()
    config.train.channels_last = False
    plain = train_step(build_train_state(config, device, action_dim=4, channels=3, num_classes=10), batch, 1e-3,
                       0.99, None, False)["train/loss"].item()
    assert seen and all(seen)
    assert with_cl == pytest.approx(plain, rel=1e-2)  # cuDNN may pick other (TF32) algorithms for NHWC


def random_draws_continue_after_a_restore(device: torch.device, tmp_path) -> None:
    """A state saved, then restored into a fresh one: the draws after the restore (dropout masks on `device`) are
    those the saved run drew after its save."""
    config = load_config(None, TINY + ["data.loader_workers=0"])
    shards = make_shards(tmp_path / "shards", [16, 16])

    def fresh_state():
        loader = build_sequence_loader(str(shards), composer=functools.partial(AffineComposer.for_shards, IDENTITY,
                                                                                SIDE + 4),
                                       num_views=config.model.seq_len + 1, batch_size=8, rank=0, world_size=1,
                                       num_workers=0, seed=0, train=True, shuffle_buffer=8)
        return train_state_for(config, loader, device)

    def mask() -> torch.Tensor:
        return F.dropout(torch.ones(4096, device=device), 0.5)

    state = fresh_state()
    mask()  # somewhere along the stream
    folder = state.save(to_dict(config), world=1, epoch_done=False)
    expected = [mask() for _ in range(3)]
    restored = fresh_state()  # seeds the stream afresh, as a new process would ...
    for _ in range(5):  # ... and it moves elsewhere than where the save was
        mask()
    restored.restore(folder, config.train.seed, rank=0, world=1)
    assert all(torch.equal(mask(), e) for e in expected)


# ------------------------------------------------------------------ on the CPU, every machine

def test_a_bf16_step_tracks_fp32_on_the_cpu():
    bf16_step_tracks_fp32(torch.device("cpu"))


def test_random_draws_continue_after_a_restore_on_the_cpu(tmp_path):
    random_draws_continue_after_a_restore(torch.device("cpu"), tmp_path)


# ------------------------------------------------------------------ on a GPU

@pytest.mark.gpu
def test_a_bf16_step_tracks_fp32_on_the_gpu():
    assert torch.cuda.is_bf16_supported()
    bf16_step_tracks_fp32(torch.device("cuda"))


@pytest.mark.gpu
def test_channels_last_convolutions_give_the_same_step_on_the_gpu():
    channels_last_convolutions_give_the_same_step(torch.device("cuda"))


@pytest.mark.gpu
def test_cuda_random_draws_continue_after_a_checkpoint_restore(tmp_path):
    """TrainState's rank state saves `cuda_rng`; a restored state must continue the CUDA stream (dropout on the
    GPU draws from it), not restart it."""
    random_draws_continue_after_a_restore(torch.device("cuda"), tmp_path)


@pytest.mark.gpu
def test_a_cuda_state_saves_its_cuda_rng(tmp_path):
    from trainer.checkpointing.dcp import read_rank_state

    config = load_config(None, TINY)
    shards = make_shards(tmp_path / "shards", [16, 16])
    loader = build_sequence_loader(str(shards), composer=functools.partial(AffineComposer.for_shards, IDENTITY,
                                                                            SIDE + 4),
                                   num_views=4, batch_size=8, rank=0, world_size=1, num_workers=0, seed=0,
                                   train=True, shuffle_buffer=8)
    state = train_state_for(config, loader, torch.device("cuda"))
    folder = state.save(to_dict(config), world=1, epoch_done=False)
    assert torch.equal(read_rank_state(folder, 0)["cuda_rng"], torch.cuda.get_rng_state())
