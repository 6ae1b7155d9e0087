"""Bad input to `python trainer/run.py` gives one clear line and exit code 2, before Ray starts."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers.paths import PROJECT_ROOT


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "trainer/run.py", *args], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("override, expected", [
    ("model.seq_lenn=3", "unknown config key 'model.seq_lenn'; did you mean 'model.seq_len'?"),
    ("model.seq_len=three", "model.seq_len must be int, got 'three'"),
    ("model.seq_len=0", "model.seq_len (M) must be >= 1, got 0"),
    ("scaling.parallelism=fsdp", "scaling.parallelism must be one of 'fsdp2', 'ddp', got 'fsdp'"),
    ("data.batch_size=129", "data.batch_size=129 is not divisible by scaling.num_workers=2"),
    ("seq_len", "override 'seq_len' is not of the form key=value"),
    ("model.method=simsiam", "unknown method 'simsiam' (model.method); valid: byol, cond_byol, equimod, sen, seq_jepa"),
    ("simclr.temperature=0", "simclr.temperature must be > 0, got 0"),
])
def test_bad_config_is_one_clear_line(override, expected):
    result = _run(override)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert expected in lines[0]


def test_missing_config_file_is_clear():
    result = _run("--config", "no/such/file.yaml")
    assert result.returncode == 2
    assert "config file not found: no/such/file.yaml" in result.stderr


@pytest.mark.parametrize("method", ["seq_jepa", "simclr", "byol", "vicreg", "sie"])  # one per family
def test_missing_dataset_is_clear(tmp_path, method):
    result = _run(f"data.shards={tmp_path / 'nothing'}", "data.prepare=false", f"model.method={method}")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert str(tmp_path / "nothing") in lines[0] and "python -m data_pipeline write" in lines[0]
