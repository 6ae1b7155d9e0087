"""infra/sizing.py: the GPU memory estimates run, follow the model's real parameter counts, and are the
ones infra/README.md shows."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.helpers.paths import INFRA, PROJECT_ROOT


@pytest.fixture(scope="module")
def printed() -> str:
    done = subprocess.run([sys.executable, str(INFRA / "sizing.py")], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _rows(text: str, strategy: str) -> dict[str, list[float]]:
    """model -> GiB per GPU for 1, 2, 4, 8 GPUs, from the training-state table."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 7 and cells[2] == strategy:
            rows[cells[0]] = [float(c.split()[0]) for c in cells[3:]]
    return rows


def test_the_readme_shows_the_table_the_script_prints(printed):
    readme = (INFRA / "README.md").read_text()
    state = [line for line in printed.splitlines() if re.match(r"\| .* \| (DDP|FSDP2) \|", line)]
    assert len(state) == 16
    missing = [line for line in state if line not in readme]
    assert not missing, "infra/README.md is out of date; paste `python infra/sizing.py`:\n" + "\n".join(missing)
    assert "ESTIMATE" in printed and "ESTIMATE" in readme


def test_fsdp2_shards_the_state_and_ddp_replicates_it(printed):
    ddp, fsdp2 = _rows(printed, "DDP"), _rows(printed, "FSDP2")
    assert ddp.keys() == fsdp2.keys() and len(ddp) == 8
    for model in ddp:
        assert ddp[model][0] == fsdp2[model][0], f"{model}: one GPU is the same plain model under both"
        assert len(set(ddp[model][1:])) == 1, f"{model}: DDP keeps a full replica whatever the GPU count"
        assert fsdp2[model] == sorted(fsdp2[model], reverse=True), f"{model}: FSDP2 shrinks with more GPUs"
        assert fsdp2[model][-1] < ddp[model][-1]


def test_parameter_counts_are_the_real_models():
    """ResNet-18's encoder, as built by trainer/model, is the 11.2M of the table (torchvision's minus fc)."""
    from trainer.model import build_encoder

    encoder = build_encoder("resnet18", in_channels=3)
    assert round(sum(p.numel() for p in encoder.parameters()) / 1e6, 1) == 11.2


def test_activations_are_measured_for_every_built_recipe(printed):
    lines = [line for line in printed.splitlines() if "px |" in line]
    assert len(lines) == 5
    for line in lines:
        fp32, bf16 = (float(x) for x in re.search(r"\| ([\d.]+) / ([\d.]+) MiB \|", line).groups())
        assert fp32 > 0 and bf16 > 0
