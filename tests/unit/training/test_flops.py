"""Model FLOPs utilisation: the FLOP counter against known counts
(a Linear layer, ResNet-18 as in docs/paper-and-original-code.md#flops), no side effect on the run (RNG, losses), peaks
(configured, datasheet table, measured) and the MFU arithmetic."""

from __future__ import annotations

import random
import time

import pytest
import torch
from torch import nn

from trainer.config import Config, load_config
from trainer.errors import ConfigError
from trainer.model import build_encoder
from trainer.training.flops import (
    batch_step_flops,
    count_flops,
    gpu_peak,
    measure_peak,
    mfu_metrics,
    peak_flops,
    step_flops,
)
from trainer.training.setup import build_train_state
from trainer.training.step import synthetic_batch, train_step


def tiny_config() -> Config:
    return load_config(None, ["model.encoder=convnet", "model.conv_width=4", "model.action_proj_dim=8",
                              "seq_jepa.num_layers=1", "seq_jepa.pred_hidden=16", "probe.hidden=8"])


def test_a_linear_layer_costs_2_n_in_out_forward_and_three_times_that_with_backward():
    n, d_in, d_out = 16, 24, 40

    def forward(layer):
        return layer(torch.empty(n, d_in, requires_grad=True))

    forward_flops = 2 * n * d_in * d_out
    assert count_flops(lambda: nn.Linear(d_in, d_out), forward) == forward_flops
    # backward: the input's gradient and the weight's, each as costly as the forward
    assert count_flops(lambda: nn.Linear(d_in, d_out), lambda m: forward(m).sum().backward()) == 3 * forward_flops


@pytest.mark.parametrize("cifar_stem, side, gflops", [(False, 128, 1.184), (True, 32, 1.111)])
def test_resnet18_forward_per_image_matches_the_spec(cifar_stem, side, gflops):
    """Standard stem 128 px 1.184 GFLOPs, CIFAR stem 32 px 1.111 GFLOPs per image
    (docs/paper-and-original-code.md#flops)."""
    flops = count_flops(lambda: build_encoder("resnet18", 3, cifar_stem=cifar_stem),
                        lambda encoder: encoder(torch.empty(2, 3, side, side)))
    assert flops / 2 / 1e9 == pytest.approx(gflops, rel=2e-3)


def test_a_3diebench_step_costs_the_spec_count_plus_the_leakage_aggregates_and_probes():
    """11.98 GFLOPs per sequence (fwd+bwd, M=3, 128 px; docs/paper-and-original-code.md#flops). The step also runs the
    no-grad single-view aggregates (4 tokens x 29.5 MFLOPs) and the probes: a little more, never less."""
    per_sequence = step_flops(Config(), action_dim=4, channels=3, num_classes=55, batch_per_rank=2, image_side=128,
                              num_views=4) / 2
    assert 11.98e9 < per_sequence < 11.98e9 * 1.02


def test_the_count_is_linear_in_the_batch_and_follows_a_batchs_shape():
    config = tiny_config()
    one = step_flops(config, 3, 1, 10, batch_per_rank=4, image_side=16, num_views=3)
    assert step_flops(config, 3, 1, 10, batch_per_rank=8, image_side=16, num_views=3) == 2 * one
    batch = synthetic_batch(4, 3, 1, 16, 3, 10, torch.device("cpu"))
    assert batch_step_flops(config, batch, num_classes=10) == one
    assert step_flops(config, 3, 1, 10, batch_per_rank=4, image_side=16, num_views=4) > one  # one more view
    assert step_flops(config, 3, 1, 10, batch_per_rank=1, image_side=16, num_views=3) == one / 4  # per sequence


def test_counting_and_measuring_leave_the_rng_and_the_runs_losses_untouched():
    config = tiny_config()
    device = torch.device("cpu")

    def losses(count: bool) -> list[float]:
        state = build_train_state(config, device, action_dim=3, channels=1, num_classes=10)
        if count:  # where the loop would call them: after building the state, before the first step
            torch_rng, python_rng = torch.get_rng_state(), random.getstate()
            step_flops(config, 3, 1, 10, batch_per_rank=8, image_side=16, num_views=4)
            peak_flops(device, False, None)
            assert torch.equal(torch.get_rng_state(), torch_rng) and random.getstate() == python_rng
        batch = synthetic_batch(8, 4, 1, 16, 3, 10, device)
        return [train_step(state, batch, 1e-3, 0.99, None, False)["train/loss"].item() for _ in range(3)]

    assert losses(count=True) == losses(count=False)  # dropout draws from the global RNG: bit-identical


def test_the_measured_cpu_peak_is_positive_and_bounds_a_matmul():
    peak = measure_peak(torch.device("cpu"), bf16=False, seconds=0.2)
    assert peak > 0 and measure_peak(torch.device("cpu"), bf16=False, seconds=0.2, clock=time.process_time) > 0
    a, b = torch.rand(512, 512), torch.rand(512, 512)
    torch.matmul(a, b)
    t0 = time.perf_counter()
    for _ in range(5):
        torch.matmul(a, b)
    rate = 5 * 2 * 512**3 / (time.perf_counter() - t0)
    assert rate < 3 * peak  # the peak is a best-of over larger matmuls: another one cannot beat it by much


def test_peaks_come_from_the_config_then_the_datasheet_table_then_a_measurement():
    assert peak_flops(torch.device("cpu"), True, 2.5) == (2.5e12, "train.peak_tflops")
    flops, source = peak_flops(torch.device("cpu"), False, None)
    assert flops > 0 and source.startswith("measured: best matmul/conv rate on cpu, fp32")
    names = {"NVIDIA H100 80GB HBM3": 989.4, "NVIDIA H100 PCIe": 756.5, "NVIDIA H100 NVL": 835.5,
             "NVIDIA H200": 989.4, "NVIDIA H200 NVL": 835.5, "NVIDIA A100-SXM4-80GB": 312.0,
             "NVIDIA A100 80GB PCIe": 312.0}
    for name, tflops in names.items():
        assert gpu_peak(name, "bf16")[0] == pytest.approx(tflops * 1e12), name
    assert gpu_peak("NVIDIA H100 80GB HBM3", "fp32")[0] == pytest.approx(67e12)
    assert "datasheet" in gpu_peak("NVIDIA A100-SXM4-40GB", "tf32")[1]
    assert gpu_peak("NVIDIA GeForce RTX 4090", "bf16") is None  # unknown: peak_flops measures it instead


def test_mfu_is_the_achieved_rate_of_all_workers_over_their_summed_peak():
    metrics = mfu_metrics(step_flops=1e12, steps=10, elapsed_s=2.0, world=4, peak=1e13)
    assert metrics == {"train/tflops_per_s": pytest.approx(20.0), "train/mfu": pytest.approx(0.5)}


def test_peak_tflops_must_be_positive():
    with pytest.raises(ConfigError, match="train.peak_tflops must be > 0"):
        load_config(None, ["train.peak_tflops=0"])
    assert load_config(None, ["train.peak_tflops=989.4"]).train.peak_tflops == 989.4


@pytest.mark.gpu
def test_a_gpu_peak_is_known_or_measured_and_no_matmul_or_convolution_beats_it():
    device = torch.device("cuda")
    flops, source = peak_flops(device, True, None)
    assert flops > 0 and ("datasheet" in source or source.startswith("measured"))
    assert measure_peak(device, bf16=True, seconds=0.2) < 1.5 * flops  # no GPU beats its datasheet
