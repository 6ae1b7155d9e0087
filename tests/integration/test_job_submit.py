"""The README's cluster path: `ray start --head`, then `ray job submit --working-dir . -- python trainer/run.py`.

The head runs in its own temporary folder, so `ray.init()` elsewhere in the test session never finds
it, and in its own process group, so the teardown stops every process it started and nothing else.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from tests.helpers.paths import PROJECT_ROOT
from tests.helpers.runs import PROBE_METRICS, free_port, run_checkpoints, the_run, tiny_overrides

pytestmark = pytest.mark.integration


def _ray_cli() -> list[str]:
    """The `ray` command of this interpreter's environment (not whatever `ray` is first on PATH)."""
    return [sys.executable, "-c", "import sys; from ray.scripts.scripts import main; sys.exit(main())"]


@pytest.fixture(scope="module")
def ray_head():
    """A one-node Ray cluster with the dashboard (the job server) on 127.0.0.1; yields its address."""
    # A short folder: Ray's unix sockets live under it and their paths must stay under 108 bytes.
    temp_dir = tempfile.mkdtemp(prefix="rh-", dir="/tmp")
    dashboard_port = free_port()
    # The job's `python` is the head's: this interpreter's environment, as in an activated virtualenv.
    env = {**os.environ, "RAY_AUTH_MODE": "token", "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    head = subprocess.Popen(
        _ray_cli() + ["start", "--head", "--block", f"--temp-dir={temp_dir}", "--num-cpus=2",
                      "--node-ip-address=127.0.0.1", f"--port={free_port()}", "--dashboard-host=127.0.0.1",
                      f"--dashboard-port={dashboard_port}", f"--ray-client-server-port={free_port()}",
                      # Fixed defaults (the agent's 52365, ...) clash with the session's other local Ray instance.
                      f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
                      f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard_port}"
    try:
        # Ready when a trivial job runs: the dashboard answers before the node's job agent has registered
        # ("No available agent to submit job").
        deadline = time.monotonic() + 120
        while subprocess.run(_ray_cli() + ["job", "submit", "--address", address, "--", "true"], env=env,
                             capture_output=True, timeout=60).returncode != 0:
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"`ray start --head` did not come up (exit code {head.poll()}); logs in {temp_dir}")
            time.sleep(1)
        yield address, env
    finally:
        os.killpg(head.pid, signal.SIGKILL)  # Ray's daemons ignore SIGTERM
        head.wait(timeout=30)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_ray_job_submit_runs_the_training_job(ray_head, fashion_mnist_shards, tmp_path, mlflow_uri):
    address, env = ray_head
    name = "submitted-run"
    overrides = tiny_overrides(fashion_mnist_shards, tmp_path / "runs", mlflow_uri, name)
    done = subprocess.run(
        _ray_cli() + ["job", "submit", "--address", address, "--working-dir", ".", "--",
                      "python", "trainer/run.py", *overrides, "scaling.num_workers=2", "train.epochs=1"],
        cwd=PROJECT_ROOT, env=env,
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "[seq-jepa] finished:" in done.stdout and "succeeded" in done.stdout

    assert run_checkpoints(tmp_path / "runs", name), "the submitted job wrote no checkpoint"
    _, run = the_run(mlflow_uri, name)
    assert run.info.status == "FINISHED"
    for key in PROBE_METRICS:
        assert key in run.data.metrics, f"{key} missing from MLflow"


def test_ray_job_submit_runs_a_sweep(ray_head, fashion_mnist_shards, tmp_path, mlflow_uri):
    """`ray job submit -- python sweeps/run.py ...`: one smoke trial on the submitted cluster."""
    address, env = ray_head
    done = subprocess.run(
        _ray_cli() + ["job", "submit", "--address", address, "--working-dir", ".", "--",
                      "python", "sweeps/run.py", "sweeps/smoke.yaml", "name=submitted-sweep",
                      "search_space.model.seq_len={grid: [2]}", f"storage_path={tmp_path / 'sweeps'}",
                      f"data.shards={fashion_mnist_shards}", "data.prepare=false", "train.epochs=1",
                      f"tracking.tracking_uri={mlflow_uri}"],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "| submitted-sweep-" in done.stdout and "succeeded" in done.stdout

    from sweeps.report import child_runs, find_sweep

    runs = child_runs(mlflow_uri, find_sweep(mlflow_uri, "seq-jepa-sweeps", "submitted-sweep"))
    assert len(runs) == 1 and runs[0].status == "FINISHED" and "eval/inv/acc_agg/M3" in runs[0].metrics
