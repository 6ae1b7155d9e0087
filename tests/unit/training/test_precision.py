"""`train.precision=auto` picks bf16 only where the hardware runs it natively."""

from __future__ import annotations

import torch

from trainer.training import precision
from trainer.training.precision import resolve_precision

CPU = torch.device("cpu")


def test_auto_follows_the_cpu(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision("auto", CPU) == ("bf16", None)
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert resolve_precision("auto", CPU) == ("fp32", None)


def test_explicit_choices_are_kept_and_emulated_bf16_warns(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert resolve_precision("fp32", CPU) == ("fp32", None)
    chosen, warning = resolve_precision("bf16", CPU)
    assert chosen == "bf16" and "emulated" in warning and "train.precision=auto" in warning
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision("bf16", CPU) == ("bf16", None)


def test_detection_agrees_with_torch_on_this_machine():
    """Both ways: native where torch's own CPU probe finds AVX512-BF16 or AMX, emulated (fp32 under auto) where not."""
    torch_says = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert precision.cpu_has_native_bf16() == torch_says
    assert resolve_precision("auto", CPU)[0] == ("bf16" if torch_says else "fp32")
