"""Offline evaluation end to end on a real checkpoint (the DCP writer the trainer uses) and real Fashion-MNIST shards:
every probe's metric, the on-disk feature cache, checkpoints in S3 (a real HTTP server on 127.0.0.1), an MLflow run
id whose checkpoints live in S3, and one-line errors."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from data_pipeline import S3Options
from data_pipeline.storage import S3Store
from tests.helpers.runs import free_port, tiny_overrides
from trainer.checkpointing import dcp as ckpt
from trainer.checkpointing.run_folders import latest_checkpoint
from trainer.config import load_config, to_dict
from trainer.data import build_frozen_view_loader
from trainer.evaluate import evaluate, load_checkpoint_config, log_to_mlflow, main
from trainer.evaluation import feature_cache
from trainer.evaluation.features import SplitFeatures
from trainer.methods.build import build_model

TINY_EVAL = ["eval.seq_lens=[1, 3]", "eval.train_samples=192", "eval.val_samples=128", "eval.epochs=2",
             "eval.hidden=16", "eval.batch_size=64"]
STEP = 7


def write_checkpoint(shards: Path, tmp_path: Path, mlflow_uri: str, name: str, extra: list[str] = ()) -> Path:
    """A run folder holding one checkpoint of a (randomly initialised) tiny model, as the trainer writes it."""
    config = load_config(None, tiny_overrides(shards, tmp_path / "runs", mlflow_uri, name)
                         + [f"data.cache_dir={tmp_path / 'cache'}", *TINY_EVAL, *extra])
    loader = build_frozen_view_loader(config, "val", 3)
    torch.manual_seed(0)
    model = build_model(config, loader.action_dim, loader.channels)
    optimizer = torch.optim.AdamW(model.parameters())
    weights = {"model": ckpt.ModuleState(model, optimizer).state_dict()}  # the layout TrainState writes
    folder = ckpt.write_checkpoint(weights, {"epoch": 1, "step": STEP, "world_size": 1, "config": to_dict(config)},
                                   rank_state={})
    run = tmp_path / "runs" / name
    run.mkdir(parents=True)
    shutil.move(str(folder), run / "checkpoint_2026-11-25_12-00-00.000000")
    return run


@pytest.fixture
def run_folder(fashion_mnist_shards, tmp_path, mlflow_uri) -> Path:
    return write_checkpoint(fashion_mnist_shards, tmp_path, mlflow_uri, "eval-run")


def _cache_entries(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "cache" / "features").glob("*.pt"))


def test_every_probe_reports_and_a_second_evaluation_reuses_the_cached_features(run_folder, tmp_path, capsys):
    checkpoint = latest_checkpoint(run_folder)
    config = load_checkpoint_config(checkpoint, [])
    first = evaluate(config, run_folder)
    for m in (1, 3):  # the listed inference lengths, and only those
        for key in (f"eval/inv/acc_agg/M{m}", f"eval/path/r2/M{m}", f"eval/path/r2_no_vision/M{m}",
                    f"eval/path/r2/M{m}/rotation", f"eval/path/r2/M{m}/translation"):
            assert key in first, key
    assert "eval/inv/acc_agg/M2" not in first and "eval/path/r2/M2" not in first
    for key in ("eval/inv/acc_enc", "eval/equi/r2_enc", "eval/equi/r2_enc/rotation", "eval/equi/r2_agg",
                "eval/equi/r2_abs/rotation"):
        assert key in first, key
    assert first["eval/path/r2/M1"] == first["eval/path/r2/M1/rotation"]  # the headline is the telling group
    assert len(_cache_entries(tmp_path)) == 2  # one per split
    err = capsys.readouterr().err
    assert "features (train)" in err and "probes" in err and "from the cache" not in err  # progress bars

    again = evaluate(config, run_folder)  # same settings: cached features give the very same metrics
    assert "from the cache" in capsys.readouterr().err and again == first
    other_probes = evaluate(load_checkpoint_config(checkpoint, ["eval.epochs=3", "eval.lr=3e-3"]), run_folder)
    assert "from the cache" in capsys.readouterr().err and other_probes != first
    assert len(_cache_entries(tmp_path)) == 2  # probe settings are not part of the key
    evaluate(load_checkpoint_config(checkpoint, ["eval.seq_lens=[2]"]), run_folder)  # other features: new entries
    assert len(_cache_entries(tmp_path)) == 4


def test_no_cache_flag_reads_and_writes_nothing(run_folder, tmp_path, capsys):
    assert main([str(run_folder), "--no-log", "--no-cache"]) == 0
    assert _cache_entries(tmp_path) == []
    out = capsys.readouterr().out
    assert "eval/path/r2/M3 " in out and "eval/equi/r2_abs/rotation" in out


def test_cache_writes_are_atomic_and_a_broken_entry_is_recomputed(tmp_path):
    features = SplitFeatures(*(torch.zeros(4, 2) for _ in range(7)))
    path = tmp_path / "features" / "entry.pt"
    with pytest.raises((pickle.PicklingError, AttributeError)):  # fails mid-write (an unpicklable value): nothing
        # may be left behind
        feature_cache.save(path, features, {"unpicklable": lambda: None})
    assert list(path.parent.iterdir()) == []
    feature_cache.save(path, features, {"num_classes": 3})
    loaded, info = feature_cache.load(path)
    assert info == {"num_classes": 3} and torch.equal(loaded.z_enc, features.z_enc) and loaded.z_path is None
    path.write_bytes(path.read_bytes()[:100])  # truncated by something else
    assert feature_cache.load(path) is None


def test_a_checkpoint_of_an_older_format_is_one_error_line(run_folder, capsys):
    checkpoint = latest_checkpoint(run_folder)
    state_file = checkpoint / ckpt.TRAINER_STATE_FILE
    state = json.loads(state_file.read_text())
    state.pop("format")  # what checkpoints written before formats were numbered look like
    state_file.write_text(json.dumps(state))
    assert main([str(run_folder), "--no-log"]) == 2
    assert f"error: checkpoint {checkpoint} has format 1" in capsys.readouterr().err

def _upload(folder: Path, url: str, s3: S3Options) -> None:
    store = S3Store(s3)
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            store.put_file(path, f"{url}/{path.relative_to(folder).as_posix()}")


def test_checkpoints_in_s3_evaluate_from_a_run_folder_url_and_an_mlflow_run_id(
        fashion_mnist_shards, tmp_path, mlflow_uri, s3_endpoint, s3_bucket, capsys):
    from mlflow.tracking import MlflowClient

    from trainer.tracking import start_or_resume_run

    name, storage = "s3-eval-run", f"s3://{s3_bucket}/runs"
    endpoint = f"data.s3_endpoint_url={s3_endpoint}"
    run = write_checkpoint(fashion_mnist_shards, tmp_path, mlflow_uri, name, [endpoint, f"run.storage_path={storage}"])
    s3 = S3Options(endpoint_url=s3_endpoint)
    _upload(run, f"{storage}/{name}", s3)
    shutil.rmtree(run)  # only the copy in S3 is left

    # The CLI, from the run folder's URL: its latest checkpoint is downloaded and probed.
    assert main([f"{storage}/{name}", endpoint, "--no-log", "--no-cache", *TINY_EVAL]) == 0
    assert "eval/path/r2/M3 " in capsys.readouterr().out

    # In process, from the checkpoint's URL (the sweep's path); the feature cache keys on the S3 object sizes.
    checkpoint = f"{storage}/{name}/checkpoint_2026-11-25_12-00-00.000000"
    config = load_checkpoint_config(checkpoint, [endpoint])
    metrics = evaluate(config, checkpoint)
    assert "eval/equi/r2_abs/rotation" in metrics and len(_cache_entries(tmp_path)) == 2
    assert evaluate(config, checkpoint) == metrics and "from the cache" in capsys.readouterr().err

    # --mlflow-run-id of a run whose checkpoints live in S3: found through its logged params, results logged to it.
    run_id, _ = start_or_resume_run(config, mlflow_uri)
    assert log_to_mlflow(config, checkpoint, metrics) == run_id
    assert main(["--mlflow-run-id", run_id, "--tracking-uri", mlflow_uri, "eval.epochs=1"]) == 0
    history = MlflowClient(mlflow_uri).get_metric_history(run_id, "eval/path/r2/M3")
    assert [m.step for m in history] == [STEP, STEP]


def test_a_missing_checkpoint_or_an_unreachable_store_is_one_line(tmp_path, s3_endpoint, s3_bucket, capsys):
    cases = [
        [str(tmp_path / "nothing-here")],
        [f"s3://{s3_bucket}/runs/missing", f"data.s3_endpoint_url={s3_endpoint}"],
        [f"s3://no-such-bucket-{s3_bucket}/runs/x", f"data.s3_endpoint_url={s3_endpoint}"],
        [f"s3://{s3_bucket}/runs/x", f"data.s3_endpoint_url=http://127.0.0.1:{free_port()}"],
        ["--mlflow-run-id", "0123456789abcdef", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"],
    ]
    for argv in cases:
        assert main(argv + ["--no-log"]) == 2, argv
        err = capsys.readouterr().err.strip()  # (MLflow may log its own INFO lines when it opens a new store)
        errors = [line for line in err.splitlines() if "error" in line.lower()]
        assert len(errors) == 1 and errors[0].startswith("error: ") and "Traceback" not in err, err
