"""The paper's baselines as plug-in training methods (spec §5), over one interface (`Method`).

`trainer.methods.config` stays importable without torch (the run-config schema imports it), so the
torch-based names below are loaded on first use.
"""

from __future__ import annotations

from trainer.methods.config import METHOD_NAMES, MethodConfig

_LAZY = {"METHODS": "registry", "build_method": "registry", "Method": "base", "MethodOutput": "base"}

__all__ = ["METHODS", "METHOD_NAMES", "Method", "MethodConfig", "MethodOutput", "build_method"]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'trainer.methods' has no attribute '{name}'")
    import importlib

    return getattr(importlib.import_module(f"trainer.methods.{_LAZY[name]}"), name)
