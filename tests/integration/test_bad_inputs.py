"""Bad input the README's table lists, each met with one readable message and nothing lost.

(Unknown keys, wrong types, a batch not divisible by the workers and a missing dataset are in
tests/unit/config/test_cli_errors.py; corrupt samples in tests/integration/test_train.py; checkpoints in
tests/unit/checkpointing/test_checkpoint_safety.py and tests/integration/test_fault_tolerance.py.)
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import warnings

import pytest
from mlflow.tracking import MlflowClient

from data_pipeline import DataError
from tests.helpers.paths import PROJECT_ROOT
from tests.helpers.raw_datasets import make_raw_dir
from tests.helpers.runs import free_port
from tests.helpers.shards import UNEVEN, loader, make_shards
from trainer.tracking import MetricsLogger, open_run


def _run(*args: str, timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "trainer/run.py", *args], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=timeout)


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    return lines[0]


def test_more_observed_views_than_the_objects_have_is_one_line(fashion_mnist_shards, tmp_path):
    # A 3DIEBench-like set whose objects have 4 rendered views each (only the manifest is read).
    shards = tmp_path / "3die"
    shutil.copytree(fashion_mnist_shards, shards)
    for split in ("train", "val"):
        manifest = json.loads((shards / split / "manifest.json").read_text())
        manifest["dataset"] = "3diebench"
        manifest["dataset_info"]["views_per_object"] = 4
        (shards / split / "manifest.json").write_text(json.dumps(manifest))
    line = _one_error_line(_run("data.dataset=3diebench", f"data.shards={shards}", "data.prepare=false",
                                "model.seq_len=4"))
    assert "model.seq_len=4 needs 5 views of each object" in line and "at most 3" in line


def test_a_corrupt_source_dataset_is_one_line_and_writes_no_shards(tmp_path):
    raw = make_raw_dir(tmp_path / "raw", gz=False)
    images = raw / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:1000])  # cut short
    line = _one_error_line(_run(f"data.source_dir={raw}", f"data.shards={tmp_path / 'shards'}",
                                f"data.cache_dir={tmp_path / 'cache'}"))
    assert "train-images-idx3-ubyte" in line and "truncated or corrupt" in line
    assert not (tmp_path / "shards" / "train" / "manifest.json").exists()


def test_a_truncated_shard_is_one_data_error_before_any_step(tmp_path):
    shards = make_shards(tmp_path / "s", UNEVEN)
    shard = shards / "shard-000002.tar"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(DataError, match=r"shard-000002.tar has \d+ bytes but the manifest says \d+ \(truncated"):
        loader(shards)


def test_a_missing_shard_is_one_data_error_naming_it(tmp_path):
    shards = make_shards(tmp_path / "s", UNEVEN)
    (shards / "shard-000003.tar").unlink()
    with pytest.raises(DataError, match="shard-000003.tar"):
        loader(shards)


def test_an_unreachable_mlflow_server_at_start_is_one_line_before_ray_starts(fashion_mnist_shards, tmp_path):
    started = time.monotonic()
    line = _one_error_line(_run(f"data.shards={fashion_mnist_shards}", "data.prepare=false",
                                f"tracking.tracking_uri=http://user:hunter2@127.0.0.1:{free_port()}"))
    assert "cannot reach the MLflow tracking server" in line and "hunter2" not in line
    assert time.monotonic() - started < 60


@pytest.fixture
def mlflow_server(tmp_path):
    """Start/stop an `mlflow server` on one port with one sqlite store (a tracking server that goes away)."""
    port, store = free_port(), f"sqlite:///{tmp_path / 'server.db'}"
    processes = []

    def start():
        process = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store,
                                    "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        processes.append(process)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                MlflowClient(f"http://127.0.0.1:{port}").search_experiments()
                return
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.3)
        pytest.fail("mlflow server did not start")

    def stop():
        import os
        import signal

        os.killpg(processes[-1].pid, signal.SIGTERM)
        processes[-1].wait(timeout=30)

    yield f"http://127.0.0.1:{port}", start, stop
    for process in processes:
        if process.poll() is None:
            stop()


def test_metrics_are_buffered_while_the_server_is_down_and_sent_when_it_returns(mlflow_server, monkeypatch):
    uri, start, stop = mlflow_server
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    start()
    run_id, _ = open_run(uri, "outage", "run")
    logger = MetricsLogger(uri, run_id, enabled=True, retry_every_s=0)
    logger.log_metrics({"train/loss": 1.0}, 1)
    stop()
    with pytest.warns(UserWarning, match="unreachable .* metrics are buffered"):
        begun = time.monotonic()
        for step in (2, 3, 4):
            logger.log_metrics({"train/loss": float(step)}, step)
    assert time.monotonic() - begun < 30  # training is not held up for long
    start()
    with pytest.warns(UserWarning, match="answers again: sent 4 buffered"):
        logger.log_metrics({"train/loss": 5.0}, 5)
    history = MlflowClient(uri).get_metric_history(run_id, "train/loss")
    assert sorted((m.step, m.value) for m in history) == [(s, float(s)) for s in range(1, 6)]


def test_a_resumed_run_does_not_log_a_step_twice(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id, _ = open_run(uri, "resume", "run")
    first = MetricsLogger(uri, run_id, enabled=True)
    for step in range(1, 6):
        first.log_metrics({"train/loss": float(step)}, step)
    first.log_metrics({"val/inv/acc_agg": 1.0}, 3)
    # The restored group replays steps 4 and 5 (same values, exact resume) and goes on.
    again = MetricsLogger(uri, run_id, enabled=True, resumed=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for step in range(4, 8):
            again.log_metrics({"train/loss": float(step), "val/inv/acc_agg": 2.0}, step)
    client = MlflowClient(uri)
    assert [m.step for m in client.get_metric_history(run_id, "train/loss")] == list(range(1, 8))
    assert sorted(m.step for m in client.get_metric_history(run_id, "val/inv/acc_agg")) == [3, 4, 5, 6, 7]
