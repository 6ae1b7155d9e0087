"""End to end: real shards -> Ray Train workers (FSDP2 / DDP) -> checkpoints -> MLflow, on CPU."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.helpers.paths import PROJECT_ROOT
from tests.helpers.runs import PROBE_METRICS, run_checkpoints, the_run, tiny_overrides
from trainer.evaluate import main as evaluate_main
from trainer.run import main
from trainer.training.precision import cpu_has_native_bf16

pytestmark = pytest.mark.integration

def test_two_fsdp2_workers_train_checkpoint_log_and_resume(ray_local, fashion_mnist_shards, tmp_path, mlflow_uri,
                                                          capsys):
    name = "fsdp2-run"
    overrides = tiny_overrides(fashion_mnist_shards, tmp_path / "runs", mlflow_uri, name) + ["train.keep_checkpoints=3"]
    assert main(overrides + ["scaling.num_workers=2", "scaling.parallelism=fsdp2"]) == 0

    checkpoints = run_checkpoints(tmp_path / "runs", name)
    assert checkpoints, "no checkpoint was written"
    files = {p.name for p in checkpoints[-1].iterdir()}
    assert {".metadata", "trainer_state.json", "__0_0.distcp", "__1_0.distcp"} <= files

    client, run = the_run(mlflow_uri, name)
    assert run.info.status == "FINISHED"
    for key in PROBE_METRICS:
        assert key in run.data.metrics, f"{key} missing from MLflow"
    assert 0.0 <= run.data.metrics["val/inv/acc_agg"] <= 100.0
    assert run.data.params["model.seq_len"] == "2"
    assert run.data.tags["dataset"] == "fashion-mnist"
    assert run.data.tags["precision"] == ("bf16" if cpu_has_native_bf16() else "fp32")  # `auto` on this CPU
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "model"} <= artifacts
    assert client.get_metric_history(run.info.run_id, "train/loss")[-1].step == 6

    # Same name, one more epoch: resumes from the checkpoint into the same MLflow run.
    assert main(overrides + ["scaling.num_workers=2", "train.epochs=3"]) == 0
    _, resumed = the_run(mlflow_uri, name)
    assert resumed.info.run_id == run.info.run_id
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert steps == sorted(set(steps)) and steps[-1] == 9, f"steps did not continue: {steps}"

    # Offline evaluation: the FSDP2 shards of both ranks are reassembled into one frozen model.
    tiny_eval = ["eval.seq_lens=[1, 2, 3]", "eval.train_samples=256", "eval.val_samples=128", "eval.epochs=2",
                 "eval.hidden=16", f"data.cache_dir={tmp_path / 'cache'}"]
    assert evaluate_main([str(tmp_path / "runs" / name), *tiny_eval]) == 0
    for key in ["eval/inv/acc_agg/M1", "eval/inv/acc_agg/M3", "eval/inv/acc_enc", "eval/equi/r2_enc",
                "eval/equi/r2_enc/rotation", "eval/equi/r2_agg", "eval/equi/r2_abs/rotation", "eval/path/r2/M3",
                "eval/path/r2_no_vision/M1"]:
        history = client.get_metric_history(run.info.run_id, key)
        assert [m.step for m in history] == [9], f"{key}: {history}"
    assert "eval/results.json" in {a.path for a in client.list_artifacts(run.info.run_id, "eval")}
    assert evaluate_main([str(tmp_path / "runs" / name), "model.seq_len=4"]) == 2  # the model is the checkpoint's

    # Learning curves: each of the three kept checkpoints at its step; the latest (step 9) is in MLflow already.
    assert len(run_checkpoints(tmp_path / "runs", name)) == 3
    capsys.readouterr()
    assert evaluate_main([str(tmp_path / "runs" / name), "--every-checkpoint", *tiny_eval]) == 0
    assert "2 of 3 checkpoints evaluated, 1 already in MLflow and logged" in capsys.readouterr().out
    curves = {key: sorted(m.step for m in client.get_metric_history(run.info.run_id, key))
              for key in ["eval/inv/acc_enc", "eval/inv/acc_agg/M3", "eval/equi/r2_enc/rotation"]}
    assert all(steps == [3, 6, 9] for steps in curves.values()), curves
    assert evaluate_main([str(tmp_path / "runs" / name), "--every-checkpoint", *tiny_eval]) == 0  # nothing new
    assert "0 of 3 checkpoints evaluated, 3 already in MLflow" in capsys.readouterr().out
    assert {key: sorted(m.step for m in client.get_metric_history(run.info.run_id, key)) for key in curves} == curves


def test_two_ddp_workers_train_and_log_probes(ray_local, fashion_mnist_shards, tmp_path, mlflow_uri):
    name = "ddp-run"
    overrides = tiny_overrides(fashion_mnist_shards, tmp_path / "runs", mlflow_uri, name)
    assert main(overrides + ["scaling.num_workers=2", "scaling.parallelism=ddp", "train.epochs=1",
                             "train.precision=bf16"]) == 0
    assert run_checkpoints(tmp_path / "runs", name)
    _, run = the_run(mlflow_uri, name)
    assert run.data.tags["precision"] == "bf16"  # an explicit choice is kept, emulated or not
    for key in PROBE_METRICS:
        assert key in run.data.metrics, f"{key} missing from MLflow"


def _break_first_images(shard_set: Path, per_shard: int) -> None:
    """Overwrite the PNG bodies of the first samples of every shard, keeping every byte count."""
    for shard in shard_set.glob("shard-*.tar"):
        with tarfile.open(shard) as tar:
            offsets = [m.offset_data for m in tar.getmembers() if m.name.endswith(".png")][:per_shard]
        with open(shard, "r+b") as f:
            for offset in offsets:
                f.seek(offset + 16)  # past the PNG signature and the IHDR length/tag: the header CRC fails
                f.write(b"\0" * 16)


def test_corrupt_samples_are_skipped_counted_and_logged(ray_local, fashion_mnist_shards, tmp_path, mlflow_uri):
    shards = tmp_path / "shards"
    shutil.copytree(fashion_mnist_shards, shards)
    _break_first_images(shards / "train", per_shard=150)  # more than the shuffle buffer: every rank meets some
    name = "corrupt-run"
    overrides = tiny_overrides(shards, tmp_path / "runs", mlflow_uri, name)
    assert main(overrides + ["scaling.num_workers=2", "train.epochs=1"]) == 0
    client, run = the_run(mlflow_uri, name)
    skipped = client.get_metric_history(run.info.run_id, "data/skipped_samples")
    assert skipped and skipped[-1].value >= 2, skipped
    assert client.get_metric_history(run.info.run_id, "train/loss")[-1].step == 3  # every step was taken


def test_two_workers_train_from_s3_checkpoint_into_s3_and_resume_from_it(fashion_mnist_shards, s3_endpoint, s3_bucket,
                                                                          tmp_path, mlflow_uri):
    """Shards and run.storage_path in the S3 server; both workers stream the shards over HTTP, Ray Train writes
    the checkpoints there and the second run resumes from them. `trainer/run.py` runs as a user runs it, with
    AWS_ENDPOINT_URL in its environment and its own Ray instance: Ray Train's storage (pyarrow) takes the endpoint
    from the environment of its processes only, and this session's Ray instance started without it."""
    import boto3

    from data_pipeline import S3Options, upload_shard_set

    name, url, storage = "s3-run", f"s3://{s3_bucket}/fashion-mnist", f"s3://{s3_bucket}/runs"
    for split in ("train", "val"):
        upload_shard_set(fashion_mnist_shards / split, f"{url}/{split}", S3Options(endpoint_url=s3_endpoint),
                         progress=False)
    overrides = tiny_overrides(url, tmp_path / "runs", mlflow_uri, name) + [
        f"run.storage_path={storage}", "scaling.num_workers=2", "data.resample=true", "tracking.log_model=false"]
    env = {**os.environ, "AWS_ENDPOINT_URL": s3_endpoint, "PYTHONPATH": str(PROJECT_ROOT)}
    env.pop("RAY_ADDRESS", None)

    def run(*extra: str) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, "trainer/run.py", *overrides, *extra], cwd=PROJECT_ROOT, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        return done

    s3 = boto3.client("s3", endpoint_url=s3_endpoint)

    def checkpoints() -> dict[str, set[str]]:
        """{checkpoint folder: its file names} in the bucket (checkpoint_manager_snapshot.json is no folder)."""
        listing = s3.list_objects_v2(Bucket=s3_bucket, Prefix=f"runs/{name}/checkpoint_")
        found: dict[str, set[str]] = {}
        for key in (obj["Key"] for obj in listing.get("Contents", [])):
            folder, slash, file = key[len(f"runs/{name}/"):].partition("/")
            if slash:
                found.setdefault(folder, set()).update({file} - {""})
        return found

    def step_of(folder: str) -> int:
        body = s3.get_object(Bucket=s3_bucket, Key=f"runs/{name}/{folder}/trainer_state.json")["Body"].read()
        return json.loads(body)["step"]

    first = run("train.epochs=1")
    written = checkpoints()
    assert len(written) == 1, written
    (folder, files), = written.items()
    assert {".metadata", "__0_0.distcp", "__1_0.distcp", "trainer_state.json", "rank_0.pt", "rank_1.pt"} <= files
    assert step_of(folder) == 3 and f"[seq-jepa] checkpoint: {storage}/{name}/{folder}" in first.stdout

    second = run("train.epochs=2")  # the same name: resumes from the checkpoint in the bucket
    assert f"[seq-jepa] run '{name}' (resumed)" in second.stdout
    assert "[seq-jepa] resumed from " in second.stdout + second.stderr
    assert "(epoch 1, step 3, 0 batches into the epoch)" in second.stdout + second.stderr
    newest = max(checkpoints())
    assert newest > folder and step_of(newest) == 6

    client, mlflow_run = the_run(mlflow_uri, name)  # one MLflow run, continued
    assert mlflow_run.data.params["data.shards"] == url and mlflow_run.data.params["data.resample"] == "True"
    steps = [m.step for m in client.get_metric_history(mlflow_run.info.run_id, "train/loss")]
    assert steps == list(range(1, 7)), steps
    for key in PROBE_METRICS:
        assert key in mlflow_run.data.metrics, f"{key} missing from MLflow"

    # Offline evaluation of what Ray Train wrote, from the run folder's URL (downloaded with boto3).
    assert evaluate_main([f"{storage}/{name}", f"data.s3_endpoint_url={s3_endpoint}", "--no-log", "--no-cache",
                          "eval.seq_lens=[1, 2]", "eval.train_samples=192", "eval.val_samples=128", "eval.epochs=1",
                          "eval.hidden=16", "eval.batch_size=64"]) == 0
