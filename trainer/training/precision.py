"""Which precision a worker trains in: `train.precision` resolved against the worker's own hardware.

Why `auto`: bf16 autocast is ~1.6x faster on CPUs with native bf16 (AVX512-BF16, AMX) and on recent
GPUs, but on a CPU without it every bf16 op is emulated and a step gets ~20x slower (measured on an
AVX2-only AMD EPYC). Workers may run on other machines than the driver, so each resolves it itself.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from pathlib import Path

import torch


@functools.cache
def cpu_has_native_bf16() -> bool:
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)  # private, hence the fallbacks
    if probe is not None and probe():
        return True
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    if amx is not None and amx():
        return True
    if sys.platform == "darwin":
        return _darwin_feature("hw.optional.arm.FEAT_BF16")
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return any(flag in flags for flag in ("avx512_bf16", "amx_bf16", "bf16"))  # "bf16": aarch64


def _darwin_feature(name: str) -> bool:
    import subprocess

    try:
        out = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.stdout.strip() == "1"


def native_bf16(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return cpu_has_native_bf16()
    return False


def resolve_precision(requested: str, device: torch.device) -> tuple[str, str | None]:
    """Return (precision to use, warning or None). `auto` picks bf16 only where it is native."""
    native = native_bf16(device)
    if requested == "auto":
        return ("bf16" if native else "fp32"), None
    if requested == "bf16" and not native:
        return "bf16", (f"train.precision=bf16 on a {device.type} without native bf16: autocast is emulated and "
                        "can be many times slower than fp32; use train.precision=auto or fp32")
    return requested, None


def autocast(device: torch.device, bf16: bool):
    """The context a forward runs in: bf16 autocast, or nothing (fp32)."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
