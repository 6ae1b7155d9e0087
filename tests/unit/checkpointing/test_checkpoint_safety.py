"""Checkpoints: complete or absent, damaged ones named, no code run from a file, a full disk said plainly."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
from torch import nn

from tests.helpers.paths import PROJECT_ROOT
from trainer.checkpointing import dcp as ckpt
from trainer.checkpointing.run_folders import is_complete, latest_checkpoint
from trainer.errors import CheckpointError

warnings.filterwarnings("ignore", message=".*in a single process.*")


def _parts(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    model(torch.randn(3, 8)).sum().backward()
    optimizer.step()
    return ckpt.ModuleState(model, optimizer)


STATE = {"epoch": 0, "step": 3, "world_size": 1}


def _saved(tmp_path):
    return ckpt.write_checkpoint(_parts(), STATE, {"torch_rng": torch.get_rng_state()}, parent=str(tmp_path))


def test_round_trip_restores_weights_optimizer_and_rank_state(tmp_path):
    folder = _saved(tmp_path)
    assert is_complete(folder)
    fresh = _parts(seed=1)
    ckpt.read_checkpoint(folder, fresh)
    assert ckpt.read_trainer_state(folder) == {"format": ckpt.FORMAT, **STATE}
    model, optimizer = fresh.module, fresh.optimizer
    reference = _parts()
    original, original_optimizer = reference.module, reference.optimizer
    for a, b in zip(model.state_dict().values(), original.state_dict().values()):
        assert torch.equal(a, b)
    assert optimizer.state_dict()["param_groups"][0]["lr"] == 0.01  # a non-tensor value, read with weights_only
    exp_avg = [s["exp_avg"] for s in optimizer.state_dict()["state"].values()]
    assert all(torch.equal(a, s["exp_avg"]) for a, s in zip(exp_avg, original_optimizer.state_dict()["state"].values()))
    assert torch.equal(ckpt.read_rank_state(folder, 0)["torch_rng"], torch.get_rng_state())


def test_a_checkpoint_missing_a_rank_file_is_incomplete_and_skipped(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    older = ckpt.write_checkpoint(_parts(), STATE, {}, parent=str(run))
    newer = ckpt.write_checkpoint(_parts(), STATE, {}, parent=str(run))
    older, newer = older.rename(run / "checkpoint_1"), newer.rename(run / "checkpoint_2")
    (newer / ckpt.rank_state_file(0)).unlink()  # as if an upload stopped half-way
    assert not is_complete(newer)
    assert latest_checkpoint(run) == older


def test_a_damaged_checkpoint_is_one_error_naming_it(tmp_path):
    folder = _saved(tmp_path)
    shard = next(folder.glob("*.distcp"))
    shard.write_bytes(shard.read_bytes()[:40])
    with pytest.raises(CheckpointError, match=f"checkpoint {folder} is unreadable"):
        ckpt.read_checkpoint(folder, _parts())
    (folder / ckpt.TRAINER_STATE_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="trainer_state.json is unreadable"):
        ckpt.read_trainer_state(folder)


def test_a_checkpoint_of_another_format_is_refused_in_one_line(tmp_path):
    folder = _saved(tmp_path)
    (folder / ckpt.TRAINER_STATE_FILE).write_text('{"epoch": 0, "step": 3, "world_size": 1}')  # before formats
    with pytest.raises(CheckpointError, match=f"checkpoint {folder} has format 1, but this version of seq-jepa reads "
                                              f"format {ckpt.FORMAT} only"):
        ckpt.read_trainer_state(folder)


class _Payload:
    """Unpickling this runs a shell command: what a crafted checkpoint would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_crafted_metadata_is_refused_without_running_it(tmp_path):
    folder = _saved(tmp_path)
    marker = tmp_path / "pwned"
    (folder / ".metadata").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(CheckpointError, match="refusing to load it"):
        ckpt.read_checkpoint(folder, _parts())
    assert not marker.exists()


def test_a_crafted_rank_file_is_refused_without_running_it(tmp_path):
    folder = _saved(tmp_path)
    marker = tmp_path / "pwned"
    torch.save({"torch_rng": _Payload(marker)}, folder / ckpt.rank_state_file(0))
    with pytest.raises(CheckpointError, match="rank_0.pt is unreadable"):
        ckpt.read_rank_state(folder, 0)
    assert not marker.exists()


def test_a_full_disk_is_one_error_and_leaves_no_partial_checkpoint(tmp_path):
    """A 64 KiB tmpfs in a private mount namespace stands in for a full disk (no root needed)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    script = textwrap.dedent(f"""
        import sys, warnings
        import torch
        from torch import nn
        from trainer.checkpointing import dcp as ckpt
        from trainer.errors import CheckpointError
        warnings.filterwarnings("ignore")
        model = nn.Linear(256, 256)  # 257 KiB of weights
        try:
            ckpt.write_checkpoint(ckpt.ModuleState(model, torch.optim.SGD(model.parameters(), lr=0.1)), {{"step": 7}},
                                  {{}}, parent="{disk}")
        except CheckpointError as err:
            print("error:", err)
        import os
        print("left:", os.listdir("{disk}"))
    """)
    command = ["unshare", "-rm", "sh", "-c",
               f'mount -t tmpfs -o size=64k none "{disk}" && exec "{sys.executable}" -c "$0"', script]
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"no private mount namespace here (unshare: {probe.stderr.decode().strip()})")
    result = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
    assert "error: no space left on the device writing the step 7 checkpoint" in result.stdout, result.stderr[-2000:]
    assert "the previous checkpoint is intact" in result.stdout
    assert "left: []" in result.stdout
