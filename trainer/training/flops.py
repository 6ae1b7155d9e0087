"""Model FLOPs utilisation (MFU): what one training step computes, what the accelerator could, and the ratio.

Why: samples/s alone cannot say whether a run is data-bound, communication-bound or simply at the
hardware's limit. MFU = achieved model FLOP/s / peak FLOP/s answers that across machines and precisions.

* `step_flops` counts the FLOPs of one step of one rank ONCE, with `torch.utils.flop_counter` (matmuls,
  convolutions, attention; elementwise ops are not counted, as in docs/paper-and-original-code.md#flops): the model's
  forward and backward, the EMA target's forward, and the online probes' forward and backward (~0.2 %). The optimizer
  step and the EMA update are elementwise over the parameters, once per step: AdamW ~10 FLOPs per trainable
  parameter (~0.3 GFLOP for ResNet-18 seq-JEPA's 27 M), the EMA lerp ~3 per target parameter (~0.03 GFLOP),
  against ~12 GFLOP per sequence times the batch: negligible, not counted. The count runs on a fresh model built on
  the meta device whose tensors then become fake (shapes, no data), inside `fork_rng`: no memory, and
  neither the real model nor the global RNG is touched, so the run's losses stay bit-identical.
* `peak_flops`: `train.peak_tflops` if set; else the datasheet figure of a known GPU; else (CPU, unknown
  GPU) the best rate of a short matmul and convolution loop in the run's precision, measured and labelled so.
* `mfu_metrics`: the window's `train/tflops_per_s` (all workers) and `train/mfu`.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.flop_counter import FlopCounterMode

from trainer.config import Config
from trainer.methods.base import MethodOutput
from trainer.methods.build import build_model
from trainer.methods.gather import local_rows_only
from trainer.training.probes import OnlineProbes, probe_features, probe_loss

# Dense (no 2:4 sparsity) peak TFLOP/s per GPU from NVIDIA's datasheets, whose tensor figures are quoted with
# sparsity (halved here): H100 and H200 SXM: BF16 1,979* / TF32 989* / FP32 67 (H100 datasheet,
# resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet; H200 datasheet,
# nvidia.com/en-us/data-center/h200); H100 PCIe: 1,513* / 756* / 51; H100 NVL and H200 NVL: 1,671* / 835* / 60;
# A100 (SXM4 and PCIe, 40 and 80 GB): BF16 312 / TF32 156 / FP32 19.5 dense (nvidia-a100-datasheet-us-nvidia-
# 1758950-r4-web.pdf); L40S: 733* / 366* / 91.6 (L40S datasheet). First match of the pattern in
# `torch.cuda.get_device_name` wins, so the specific names come first.
GPU_PEAK_TFLOPS: list[tuple[str, str, dict[str, float]]] = [
    (r"H100.*PCIe", "NVIDIA H100 PCIe", {"bf16": 756.5, "tf32": 378.0, "fp32": 51.0}),
    (r"H[12]00.*NVL", "NVIDIA H100/H200 NVL", {"bf16": 835.5, "tf32": 417.5, "fp32": 60.0}),
    (r"H100", "NVIDIA H100 SXM", {"bf16": 989.4, "tf32": 494.7, "fp32": 67.0}),
    (r"H200", "NVIDIA H200 SXM", {"bf16": 989.4, "tf32": 494.7, "fp32": 67.0}),
    (r"A100", "NVIDIA A100", {"bf16": 312.0, "tf32": 156.0, "fp32": 19.5}),
    (r"L40S", "NVIDIA L40S", {"bf16": 362.05, "tf32": 183.0, "fp32": 91.6}),
]


def model_forward(model: nn.Module, batch: dict) -> MethodOutput:
    """The model call of `trainer.training.step.train_step`: change both together."""
    return model(batch["views"], batch["rel_actions"], batch["actions"])


def count_flops(make_module: Callable[[], nn.Module], run: Callable[[nn.Module], object]) -> float:
    """FLOPs of `run(module)` on a fresh `make_module()`, without memory, data or randomness.

    The module is built on the meta device, then its tensors become fake CPU tensors (shapes only): the
    code paths a real CPU tensor takes (autocast by device type, ...) work, nothing is computed. `run`
    creates its inputs itself (`torch.empty`: fake too) and calls `.backward()` where it wants it counted.
    Cross-sample losses count over this rank's rows (they are a sliver of a step's FLOPs).
    """
    with torch.random.fork_rng(devices=[]):
        with torch.device("meta"):
            module = make_module()
        with FakeTensorMode(allow_non_fake_inputs=True), local_rows_only():  # this rank's rows: no collectives
            module.to_empty(device="cpu")
            with FlopCounterMode(display=False) as counter:
                run(module)
    return float(counter.get_total_flops())


def step_flops(config: Config, action_dim: int, channels: int, num_classes: int, batch_per_rank: int,
               image_side: int, num_views: int,
               forward: Callable[[nn.Module, dict], MethodOutput] = model_forward) -> float:
    """FLOPs of one training step of one rank: model forward + backward (EMA target forward included) and the
    online probes' forward + backward, for a batch of `batch_per_rank` sequences of `num_views` views.
    The count is linear in the batch; a batch of 1 (per-sequence figures) is counted as half a batch of 2, since
    BatchNorm in training mode refuses a single sample."""
    if batch_per_rank == 1:
        return step_flops(config, action_dim, channels, num_classes, 2, image_side, num_views, forward) / 2

    class Step(nn.Module):  # model and probes in one module, so that count_flops builds both
        def __init__(self):
            super().__init__()
            self.model = build_model(config, action_dim, channels)
            self.probes = OnlineProbes(self.model.encoder.out_dim, self.model.aggregate_dim, action_dim,
                                       num_classes, config.probe.hidden)

    def run(step: Step) -> None:
        step.train()
        batch = {"views": torch.empty(batch_per_rank, num_views, channels, image_side, image_side),
                 "rel_actions": torch.empty(batch_per_rank, num_views - 1, action_dim),
                 "actions": torch.empty(batch_per_rank, num_views, action_dim),
                 "label": torch.zeros(batch_per_rank, dtype=torch.long)}
        out = forward(step.model, batch)
        out.loss.backward()
        pred = step.probes(probe_features(out))
        probe_loss(pred, batch["label"], batch["rel_actions"][:, 0].float()).backward()

    return count_flops(Step, run)


def batch_step_flops(config: Config, batch: dict, num_classes: int) -> float:
    """`step_flops` for batches shaped like `batch` (a loader's or a device batch: views (B, V, C, S, S))."""
    batch_size, num_views, channels, side = batch["views"].shape[:4]
    return step_flops(config, batch["rel_actions"].shape[-1], channels, num_classes, batch_size, side, num_views)


def gpu_peak(name: str, precision: str) -> tuple[float, str] | None:
    """(FLOP/s, source) of a known GPU from its `torch.cuda.get_device_name`; None if it is not in the table."""
    for pattern, label, peaks in GPU_PEAK_TFLOPS:
        if re.search(pattern, name):
            return peaks[precision] * 1e12, f"{label} datasheet, {precision} dense"
    return None


def measure_peak(device: torch.device, bf16: bool, seconds: float = 0.4,
                 clock: Callable[[], float] = time.perf_counter) -> float:
    """The best FLOP/s of a square matmul and of a 3x3 NHWC convolution in the run's precision, over ~`seconds`,
    with this process's threads. Both, because a CPU's libraries differ: on an AMD EPYC here fp32 matmuls (MKL)
    reach 75 GFLOP/s where oneDNN's convolutions reach 125, and bf16 matmuls 400 where convolutions reach 180.

    Inputs come from a private generator inside `fork_rng`: the run's random draws are untouched.
    `clock=time.process_time` (CPU): per second of this process's CPU time over all its threads, which other jobs
    on a shared machine inflate far less than the wall clock (compare with a step timed the same way).
    """
    dtype = torch.bfloat16 if bf16 else torch.float32
    n, (batch, width, side) = (1024, (8, 256, 16)) if device.type == "cpu" else (8192, (64, 256, 56))
    with torch.random.fork_rng(devices=[]), torch.no_grad():  # nothing here draws from a CUDA generator
        g = torch.Generator().manual_seed(0)
        a, b = (torch.rand(n, n, generator=g).to(device, dtype) for _ in range(2))
        x = torch.rand(batch, width, side, side, generator=g).to(device, dtype)
        w = torch.rand(width, width, 3, 3, generator=g).to(device, dtype)
        x, w = (t.contiguous(memory_format=torch.channels_last) for t in (x, w))
        kernels = [(lambda: torch.matmul(a, b), 2.0 * n**3),
                   (lambda: torch.conv2d(x, w, padding=1), 2.0 * batch * width * width * 9 * side * side)]
        best = 0.0
        for run, flops in kernels:
            run()  # warm-up: kernel selection, page faults
            started = time.perf_counter()
            while time.perf_counter() - started < seconds / len(kernels):
                _sync(device)
                t0 = clock()
                run()
                _sync(device)
                best = max(best, flops / max(clock() - t0, 1e-9))
        return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_flops(device: torch.device, bf16: bool, configured: float | None) -> tuple[float, str]:
    """(peak FLOP/s of one worker, where the figure comes from): `configured` (`train.peak_tflops`, TFLOP/s),
    else a known GPU's datasheet figure, else a measured matmul/convolution peak (`measure_peak`).

    A GPU's fp32 run is rated against TF32 while cuDNN may use it for convolutions (PyTorch's default,
    `torch.backends.cudnn.allow_tf32`): the convolutions are ~97 % of the step's FLOPs.
    """
    if configured is not None:
        return configured * 1e12, "train.peak_tflops"
    precision = "bf16" if bf16 else "fp32"
    if device.type == "cuda":
        if not bf16 and torch.backends.cudnn.allow_tf32:
            precision = "tf32"
        known = gpu_peak(torch.cuda.get_device_name(device), precision)
        if known is not None:
            return known
    threads = f", {torch.get_num_threads()} threads" if device.type == "cpu" else ""
    return measure_peak(device, bf16), (f"measured: best matmul/conv rate on {device.type}, "
                                        f"{'bf16' if bf16 else 'fp32'}{threads}")


def cpu_flags() -> dict[str, bool]:
    """The CPU features that decide its matmul peak (what a benchmark ran with): AVX2, AVX-512, AVX512-BF16, AMX."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:  # not Linux: what torch can tell
        flags = set()
    probe = lambda name: bool(getattr(torch.cpu, name, lambda: False)())  # noqa: E731 - private, hence optional
    return {"avx2": "avx2" in flags, "avx512f": "avx512f" in flags,
            "avx512_bf16": "avx512_bf16" in flags or probe("_is_avx512_bf16_supported"),
            "amx": "amx_bf16" in flags or probe("_is_amx_tile_supported")}


def describe_cpu() -> str:
    """One line: cores, torch's CPU capability and the flags above (for benchmark output)."""
    flags = ", ".join(f"{name} {'yes' if on else 'no'}" for name, on in cpu_flags().items())
    return (f"{os.cpu_count()} CPUs, torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()}), "
            f"{torch.get_num_threads()} threads; {flags}")


def mfu_metrics(step_flops: float, steps: int, elapsed_s: float, world: int, peak: float) -> dict[str, float]:
    """A logging window's achieved TFLOP/s over all `world` workers (each ran `steps` steps of `step_flops`) and
    the MFU: achieved / (world x per-worker peak)."""
    achieved = step_flops * steps * world / elapsed_s
    return {"train/tflops_per_s": achieved / 1e12, "train/mfu": achieved / (world * peak)}
