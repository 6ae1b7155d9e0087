"""Throughput of the trainer's own step on one GPU at the paper's settings: sequences/s, TFLOP/s and MFU.

    python scripts/benchmark_gpu.py          # on a CUDA machine: the table (~2 minutes on an H100)
    python scripts/benchmark_gpu.py --cpu    # the same code on the CPU at tiny batches (what runs without a GPU)

Settings (docs/paper-and-original-code.md#hyper-parameters-by-source, #flops): CIFAR-100 (ResNet-18 with the CIFAR stem,
32 px, M=3, batch 256) and 3DIEBench (standard stem, 128 px, M=3, batch 512, or the largest that fits, halving on
out-of-memory), each in fp32 (convolutions in TF32, PyTorch's default) and bf16 autocast, with and without
`train.channels_last`. The step is `trainer.training.step.train_step` (forward, backward, AdamW, EMA update, online
probes) on `synthetic_batch`: pure compute, no data loading. FLOPs per step: `trainer.training.flops.step_flops`,
counted once; the peak: `peak_flops` (the datasheet table for known GPUs, else a measured matmul/convolution peak).
Without CUDA the script says what it skipped and runs the same code on the CPU, so that it is checked everywhere.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

import torch

from trainer.config import Config
from trainer.training.flops import describe_cpu, peak_flops, step_flops
from trainer.training.setup import build_train_state
from trainer.training.step import synthetic_batch, train_step


@dataclass(frozen=True)
class Setting:
    name: str
    cifar_stem: bool
    side: int
    batch: int
    action_dim: int  # the dataset's actions: augmentation parameters (9) or a relative quaternion (4)
    num_classes: int
    seq_len: int = 3


SETTINGS = [Setting("CIFAR-100, ResNet-18 CIFAR stem, 32 px, M=3", True, 32, 256, 9, 100),
            Setting("3DIEBench, ResNet-18, 128 px, M=3", False, 128, 512, 4, 55)]


def step_rate(setting: Setting, batch: int, bf16: bool, channels_last: bool, device: torch.device, steps: int,
              warmup: int) -> tuple[float, float]:
    """(sequences/s, FLOPs of one step) of the trainer's step at `batch`."""
    config = Config()  # the schema's defaults are the paper's recipe
    config.model.seq_len, config.model.cifar_stem, config.train.channels_last = (setting.seq_len, setting.cifar_stem,
                                                                                  channels_last)
    views = setting.seq_len + 1
    flops = step_flops(config, setting.action_dim, 3, setting.num_classes, batch, setting.side, views)
    state = build_train_state(config, device, action_dim=setting.action_dim, channels=3,
                              num_classes=setting.num_classes)
    data = synthetic_batch(batch, views, 3, setting.side, setting.action_dim, setting.num_classes, device)
    for i in range(warmup + steps):
        if i == warmup:
            sync(device)
            start = time.perf_counter()
        train_step(state, data, 1e-4, 0.996, None, bf16)
    sync(device)
    return batch * steps / (time.perf_counter() - start), flops


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fitting_rate(setting: Setting, batch: int, bf16: bool, channels_last: bool, device: torch.device, steps: int,
                 warmup: int) -> tuple[int, float, float]:
    """(batch, sequences/s, FLOPs per step) at `batch`, or at the largest half of it that fits in memory."""
    while True:
        try:
            return (batch, *step_rate(setting, batch, bf16, channels_last, device, steps, warmup))
        except torch.cuda.OutOfMemoryError:
            if batch == 1:
                raise
            batch //= 2
            torch.cuda.empty_cache()
            print(f"  out of memory: {setting.name} at batch {batch * 2}, trying {batch}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu", action="store_true", help="run on the CPU at tiny batches even if CUDA is there")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per row (GPU)")
    args = parser.parse_args()
    cuda = torch.cuda.is_available() and not args.cpu
    device = torch.device("cuda" if cuda else "cpu")
    if cuda:
        print(f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
              f"cuDNN {torch.backends.cudnn.version()}; host: {describe_cpu()}", flush=True)
        steps, warmup, batches = args.steps, 5, None
    else:
        why = "--cpu was given" if args.cpu else "CUDA is not available here (torch.cuda.is_available() is False)"
        print(f"SKIPPED the GPU table: {why}. Running the same code on the CPU at tiny batches instead; its numbers "
              f"are this CPU's, not a GPU's. {describe_cpu()}", flush=True)
        steps, warmup, batches = 2, 1, {SETTINGS[0].name: 8, SETTINGS[1].name: 4}
    rows = []
    for setting in SETTINGS:
        for precision in ("fp32", "bf16"):
            peak, source = peak_flops(device, precision == "bf16", None)
            for channels_last in (False, True):
                batch = batches[setting.name] if batches else setting.batch
                batch, rate, flops = fitting_rate(setting, batch, precision == "bf16", channels_last, device, steps,
                                                  warmup)
                achieved = rate / batch * flops
                rows.append((setting.name, precision, channels_last, batch, rate, achieved, peak, source))
                print(f"  {setting.name}, {precision}{', channels_last' if channels_last else ''}, batch {batch}: "
                      f"{rate:.0f} seq/s, {achieved / 1e12:.2f} TFLOP/s, MFU {achieved / peak:.1%}", flush=True)
    print(f"\n{'setting':<44} {'precision':<9} {'NHWC':<5} {'batch':>5} {'seq/s':>9} {'TFLOP/s':>8} "
          f"{'peak TFLOP/s':>12} {'MFU':>6}  peak source")
    for name, precision, channels_last, batch, rate, achieved, peak, source in rows:
        print(f"{name:<44} {precision:<9} {'yes' if channels_last else 'no':<5} {batch:>5} {rate:>9.1f} "
              f"{achieved / 1e12:>8.2f} {peak / 1e12:>12.1f} {achieved / peak:>6.1%}  {source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
