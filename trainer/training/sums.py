"""Named sums on the device, reduced over the ranks in one collective: how a metric is accumulated.

A value is added under its name (a scalar or a vector tensor, or a Python number) and stays on the device, so
adding never waits for it. `all_reduce_named` sums a dict of them over the ranks as ONE float64 tensor, laid
out in sorted-key order (the same on every rank), and reads it back once. Adding a metric is one `add` where
it is computed.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


class NamedSums:
    """float64 sums by name, on `device`."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.values: dict[str, torch.Tensor] = {}

    def add(self, name: str, value: torch.Tensor | float) -> None:
        value = torch.as_tensor(value).to(self.device, torch.float64)
        self.values[name] = self.values[name] + value if name in self.values else value

    def to_state(self) -> dict[str, list[float] | float]:
        """Plain numbers (a checkpoint's per-rank state): the one read of the device, at a checkpoint."""
        return {name: value.tolist() for name, value in self.values.items()}

    @classmethod
    def from_state(cls, state: dict, device: torch.device | str = "cpu") -> NamedSums:
        sums = cls(device)
        for name, value in state.items():
            sums.add(name, torch.tensor(value, dtype=torch.float64))
        return sums


def all_reduce_named(values: dict[str, torch.Tensor | float], device: torch.device) -> dict[str, float | list]:
    """Each value summed over the ranks (itself without torch.distributed): a float, or a list for a vector.

    One collective and one read for all: the values are flattened into one float64 tensor in sorted-key order and
    split back. Host numbers are copied in from page-locked memory on CUDA, so the copy does not wait for queued
    steps.
    """
    names = sorted(values)
    parts = []
    for name in names:
        value = values[name]
        if not torch.is_tensor(value):
            value = torch.tensor(float(value), dtype=torch.float64)
            if device.type == "cuda":
                value = value.pin_memory()
        parts.append(value.to(device, torch.float64, non_blocking=True).reshape(-1))
    flat = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(flat)
    numbers = flat.tolist()  # the one read
    out, start = {}, 0
    for name, part in zip(names, parts):
        scalar = not torch.is_tensor(values[name]) or values[name].dim() == 0
        out[name] = numbers[start] if scalar else numbers[start:start + part.numel()]
        start += part.numel()
    return out
