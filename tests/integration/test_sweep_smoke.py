"""The smoke sweep end to end: real Ray Tune trials, each a real TorchTrainer with 2 workers, MLflow
child runs under the sweep's parent run, the report's figures; interrupted midway and resumed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from sweeps.run import main as sweep_main
from sweeps.runs import child_runs, find_sweep
from tests.helpers.paths import PROJECT_ROOT
from trainer.tracking import SWEEP_TAG

pytestmark = pytest.mark.integration

SMOKE = PROJECT_ROOT / "sweeps" / "smoke.yaml"


def interrupt_when(process: subprocess.Popen, ready, timeout: float = 600) -> int:
    """Ctrl-C the sweep once `ready()` holds (a Tune driver saves its state and exits); its exit code."""
    deadline = time.monotonic() + timeout
    while process.poll() is None and not ready() and time.monotonic() < deadline:
        time.sleep(0.5)
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    return process.wait(timeout=180)


def test_smoke_sweep_trains_trials_logs_child_runs_and_draws_the_report(ray_local, fashion_mnist_shards, tmp_path,
                                                                        mlflow_uri):
    from mlflow.tracking import MlflowClient

    storage = tmp_path / "sweeps"
    args = [str(SMOKE), f"storage_path={storage}", f"data.shards={fashion_mnist_shards}",
            "data.prepare=false", f"tracking.tracking_uri={mlflow_uri}"]
    # First a separate driver on the same Ray cluster, interrupted once the second trial has checkpointed.
    env = {**os.environ, "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}
    with open(tmp_path / "interrupted.log", "w") as log:
        first = subprocess.Popen([sys.executable, "sweeps/run.py", *args], cwd=PROJECT_ROOT, env=env, stdout=log,
                                 stderr=subprocess.STDOUT)
        trials = storage / "smoke" / "runs"
        code = interrupt_when(first, lambda: any(trials.glob("smoke-*_00001/checkpoint_*")))
        assert code == 130, (tmp_path / "interrupted.log").read_text()[-3000:]
    # The same command resumes it: the first trial stays done, the second continues from its checkpoint.
    assert sweep_main(args) == 0

    client = MlflowClient(mlflow_uri)
    parent = find_sweep(mlflow_uri, "seq-jepa-sweeps", "smoke")
    assert client.get_run(parent).info.status == "FINISHED"
    runs = child_runs(mlflow_uri, parent)
    assert sorted(r.params["model.seq_len"] for r in runs) == ["1", "2"]
    assert len({r.name for r in runs}) == 2 and all(r.name.startswith("smoke-") for r in runs)
    for run in runs:
        full = client.get_run(run.run_id)
        assert full.info.status == "FINISHED" and full.data.tags[SWEEP_TAG] == "smoke"
        assert full.data.params["scaling.num_workers"] == "2"
        assert any(k.startswith("val/inv/") for k in run.metrics)
        assert any(k.startswith("val/equi/") for k in run.metrics)
        assert {f"eval/inv/acc_agg/M{k}" for k in (1, 2, 3)} <= set(run.metrics)
        assert "eval/equi/r2_enc/rotation" in run.metrics
        # Rank 0 alone logs, and the resumed trial went on from its epoch-0 checkpoint: step 5 (epoch 0)
        # is logged once; step 10 twice if the interrupt fell between epoch 1's last log and its checkpoint.
        steps = [m.step for m in client.get_metric_history(run.run_id, "train/loss")]
        assert set(steps) == {5, 10} and steps.count(5) == 1
    # No stray runs: the experiment holds the parent and its two children only.
    experiment = client.get_run(parent).info.experiment_id
    assert len(client.search_runs([experiment])) == 3

    report = tmp_path / "sweeps" / "smoke" / "report"
    for name in ("heatmap_acc_mtr_mval.png", "inv_equi_scatter.png", "acc_vs_mval.png"):
        png = report / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    attached = {a.path for a in client.list_artifacts(parent, "report")}
    assert "report/heatmap_acc_mtr_mval.png" in attached and "report/trials.md" in attached
    assert "| smoke-" in (report / "trials.md").read_text()

    # Once more on a finished sweep: nothing reruns, no new MLflow run.
    assert sweep_main(args) == 0
    assert len(client.search_runs([experiment])) == 3
    assert {r.run_id for r in child_runs(mlflow_uri, parent)} == {r.run_id for r in runs}
