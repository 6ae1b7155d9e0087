"""Every command-line script imports against the current code: a refactor that moves a name breaks a script
that no other test runs (benchmarks, soak tests), and this is where it shows."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from tests.helpers.paths import PROJECT_ROOT

SCRIPTS = sorted([*PROJECT_ROOT.glob("scripts/*.py"), *(PROJECT_ROOT / path for path in (
    "infra/dry_run.py", "infra/sizing.py", "sweeps/run.py", "sweeps/report.py"))])


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(PROJECT_ROOT)))
def test_script_imports(script, monkeypatch):
    monkeypatch.syspath_prepend(str(script.parent))  # scripts import their siblings, as `python scripts/x.py` does
    spec = importlib.util.spec_from_file_location(f"script_under_test_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)  # the top level only: every script keeps its work under `__main__`
    assert callable(getattr(module, "main", None)) or script.name in {"synthetic_datasets.py",
                                                                       "benchmark_data_parts.py"}
