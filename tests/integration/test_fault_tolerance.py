"""A run that loses a worker, is preempted, or moves to fewer workers ends where an uninterrupted run ends.

Each test compares against one uninterrupted reference run of the same config: the per-step loss
logged to MLflow (bit-identical on CPU, one point per step), the samples each step trained on, and
the final checkpoint (weights, EMA target, optimizer and probe states, all equal).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

from tests.helpers.paths import PROJECT_ROOT
from tests.helpers.runs import run_checkpoints, the_run, tiny_overrides
from trainer.checkpointing.dcp import read_trainer_state
from trainer.run import main
from trainer.training.sample_log import read_sample_log

pytestmark = pytest.mark.integration

STEPS = 12  # 2 epochs x 6 steps


def _overrides(shards, tmp, mlflow_uri, name, *extra):
    return tiny_overrides(shards, tmp / "runs", mlflow_uri, name) + [
        "train.epochs=2", "train.steps_per_epoch=6", "data.loader_workers=2", "scaling.num_workers=2",
        f"debug.sample_log={tmp / 'samples' / name}", "tracking.log_model=false", *extra]


def _losses(mlflow_uri, name) -> list[tuple[int, float]]:
    client, run = the_run(mlflow_uri, name)
    return [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train/loss")]


def _final_state(tmp: Path, name: str) -> dict:
    final = run_checkpoints(tmp / "runs", name)[-1]
    out = tmp / f"{name}.pt"
    dcp_to_torch_save(final, out)
    return torch.load(out, weights_only=False)


def _assert_same_state(a: dict, b: dict, path: str = "") -> None:
    assert type(a) is type(b), path
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            _assert_same_state(a[key], b[key], f"{path}.{key}")
    elif torch.is_tensor(a):
        assert torch.equal(a, b), f"{path} differs"
    else:
        assert a == b, path


@pytest.fixture(scope="module")
def reference(ray_local, fashion_mnist_shards, tmp_path_factory):
    """The uninterrupted run: (tmp folder, mlflow uri, name)."""
    tmp = tmp_path_factory.mktemp("reference")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    assert main(_overrides(fashion_mnist_shards, tmp, uri, "reference")) == 0
    losses = _losses(uri, "reference")
    assert [s for s, _ in losses] == list(range(1, STEPS + 1))
    return tmp, uri, "reference"


def _assert_matches_reference(reference, tmp, uri, name, exact_samples=True):
    ref_tmp, ref_uri, ref_name = reference
    assert _losses(uri, name) == _losses(ref_uri, ref_name), "loss curves differ"
    if exact_samples:
        ref_samples = read_sample_log(ref_tmp / "samples" / ref_name)
        assert read_sample_log(tmp / "samples" / name) == ref_samples, "a step trained on other samples"
    _assert_same_state(_final_state(tmp, name), _final_state(ref_tmp, ref_name))
    _, run = the_run(uri, name)
    assert run.info.status == "FINISHED"


def test_a_worker_killed_mid_epoch_is_replaced_and_the_run_ends_as_if_uninterrupted(reference, fashion_mnist_shards,
                                                                                   tmp_path, monkeypatch, capfd):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # Ray Train collects reported checkpoints at its health checks: check often, so that the step-8
    # checkpoint is registered before the crash and the group resumes mid-epoch.
    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    # Rank 1 dies after step 11 (mid-epoch 2); the last checkpoint is from step 8.
    overrides = _overrides(fashion_mnist_shards, tmp_path, uri, "killed", "train.checkpoint_every_steps=4",
                           "debug.exit_at_step=11", "run.max_failures=1")
    assert main(overrides) == 0
    samples = read_sample_log(tmp_path / "samples" / "killed")
    assert len(samples) == 2 * STEPS
    assert "(epoch 1, step 8, 2 batches into the epoch)" in capfd.readouterr().out  # restored mid-epoch
    _assert_matches_reference(reference, tmp_path, uri, "killed")
    assert read_trainer_state(run_checkpoints(tmp_path / "runs", "killed")[-1])["step"] == STEPS


def test_without_retries_the_killed_worker_fails_the_run_with_a_resumable_checkpoint(ray_local, fashion_mnist_shards,
                                                                                     tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    overrides = _overrides(fashion_mnist_shards, tmp_path, uri, "no-retry", "train.checkpoint_every_steps=4",
                           "debug.exit_at_step=5", "run.max_failures=0", "train.epochs=1")
    with pytest.raises(Exception, match="(?i)worker|actor|died|exit"):
        main(overrides)
    _, run = the_run(uri, "no-retry")
    assert run.info.status == "FAILED"
    assert read_trainer_state(run_checkpoints(tmp_path / "runs", "no-retry")[-1])["step"] == 4


def _last_logged_step(uri: str, name: str) -> int:
    """0 until the experiment and the run exist."""
    experiment = MlflowClient(uri).get_experiment_by_name("seq-jepa")
    if experiment is None:
        return 0
    runs = MlflowClient(uri).search_runs([experiment.experiment_id],
                                         filter_string=f"tags.`seq_jepa.run_name` = '{name}'")
    return max((s for s, _ in _losses(uri, name)), default=0) if runs else 0


def _wait_for_step(uri: str, name: str, step: int, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[0][-3000:]
        if _last_logged_step(uri, name) >= step:
            return
        time.sleep(0.5)
    pytest.fail(f"step {step} not reached in {timeout} s")


def test_sigterm_to_the_driver_checkpoints_and_the_same_command_resumes(reference, ray_local, fashion_mnist_shards,
                                                                        tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    command = [sys.executable, "trainer/run.py", *_overrides(fashion_mnist_shards, tmp_path, uri, "preempted")]
    # A second driver on the session's Ray instance, as `ray job submit` would be.
    env = {**os.environ, "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}
    process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    _wait_for_step(uri, "preempted", 2, process)
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=300)[0]
    (tmp_path / "first.log").write_text(output)
    assert process.returncode == 143, output[-3000:]
    assert "run the same command" in output
    state = read_trainer_state(run_checkpoints(tmp_path / "runs", "preempted")[-1])
    assert 2 <= state["step"] < STEPS, state
    _, run = the_run(uri, "preempted")
    assert run.info.status == "KILLED"

    again = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600)
    (tmp_path / "again.log").write_text(again.stdout + again.stderr)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    _assert_matches_reference(reference, tmp_path, uri, "preempted")


def test_resuming_on_fewer_workers_reshards_and_says_what_changed(ray_local, fashion_mnist_shards, tmp_path, capfd):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    overrides = _overrides(fashion_mnist_shards, tmp_path, uri, "reshard")
    assert main(overrides + ["train.epochs=1"]) == 0
    assert main(overrides + ["scaling.num_workers=1", "data.loader_workers=1"]) == 0
    assert "on 1 x 1: model and optimizer state are resharded" in capfd.readouterr().err
    assert [s for s, _ in _losses(uri, "reshard")] == list(range(1, STEPS + 1))
    final = run_checkpoints(tmp_path / "runs", "reshard")[-1]
    assert read_trainer_state(final)["world_size"] == 1 and read_trainer_state(final)["step"] == STEPS


def _damage(checkpoint: Path, what: str = "*.distcp") -> None:
    for part in checkpoint.glob(what):
        part.write_bytes(part.read_bytes()[:64])


def test_a_damaged_checkpoint_falls_back_to_the_previous_one_and_none_readable_is_one_line(
        ray_local, fashion_mnist_shards, tmp_path, capfd):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    overrides = _overrides(fashion_mnist_shards, tmp_path, uri, "damaged", "train.checkpoint_every_steps=3")
    assert main(overrides + ["train.epochs=1"]) == 0  # checkpoints at steps 3 and 6
    _damage(run_checkpoints(tmp_path / "runs", "damaged")[-1], "trainer_state.json")  # its progress counters
    assert main(overrides) == 0
    out = capfd.readouterr()
    assert "is unreadable" in out.err and "trying the run's previous checkpoint" in out.err
    assert "(epoch 0, step 3, 3 batches into the epoch)" in out.out
    assert [s for s, _ in _losses(uri, "damaged")] == list(range(1, STEPS + 1))

    for checkpoint in run_checkpoints(tmp_path / "runs", "damaged"):
        _damage(checkpoint)
    assert main(overrides + ["train.epochs=3"]) == 2
    last = capfd.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: no checkpoint of") and "could be read" in last, last
