"""Every method trains a few steps with 2 Ray workers under FSDP2 and logs its probes to MLflow (one Ray instance)."""

from __future__ import annotations

import pytest

from tests.helpers.runs import run_checkpoints, the_run, tiny_overrides
from trainer.evaluate import main as evaluate_main
from trainer.methods.catalog import CATALOG
from trainer.run import main

pytestmark = pytest.mark.integration

ENCODER_METRICS = ["val/inv/acc_enc", "val/equi/r2_enc", "val/equi/r2_enc/rotation", "train/loss",
                   "train/samples_per_s", "train/grad_norm", "val/eff_rank_enc"]
AGGREGATE_METRICS = ["val/inv/acc_agg", "val/equi/r2_agg", "val/eff_rank_agg"]


def test_every_method_trains_under_fsdp2_and_logs_its_probes(ray_local, fashion_mnist_shards, tmp_path, mlflow_uri):
    for method, entry in CATALOG.items():
        name = f"{method}-run"
        overrides = tiny_overrides(fashion_mnist_shards, tmp_path / "runs", mlflow_uri, name, method)
        assert main(overrides + ["scaling.parallelism=fsdp2", "train.epochs=1",
                                 "tracking.log_model=false"]) == 0, method
        assert run_checkpoints(tmp_path / "runs", name), f"{method} wrote no checkpoint"
        _, run = the_run(mlflow_uri, name)
        assert run.info.status == "FINISHED" and run.data.tags["method"] == method
        assert run.data.tags["untrained"] == "false"
        expected = ENCODER_METRICS + (AGGREGATE_METRICS if entry.aggregate else [])
        missing = [key for key in expected if key not in run.data.metrics]
        assert not missing, f"{method}: {missing} missing from MLflow"
        terms = [key for key in run.data.metrics if key.startswith("train/loss/")]
        assert terms, f"{method} logged no terms of its loss"
        if not entry.aggregate:  # a baseline has no aggregate: nothing is made up for it
            assert not [key for key in AGGREGATE_METRICS if key in run.data.metrics], method


def test_a_baseline_is_evaluated_offline_on_its_encoder(ray_local, fashion_mnist_shards, tmp_path, mlflow_uri):
    name = "vicreg-eval"
    overrides = tiny_overrides(fashion_mnist_shards, tmp_path / "runs", mlflow_uri, name, "vicreg")
    assert main(overrides + ["train.epochs=1", "optim.lr=0"]) == 0
    client, run = the_run(mlflow_uri, name)
    assert run.data.tags["untrained"] == "true"  # optim.lr=0: the floor of a comparison
    tiny_eval = ["eval.seq_lens=[1, 3]", "eval.train_samples=256", "eval.val_samples=128", "eval.epochs=2",
                 "eval.hidden=16", f"data.cache_dir={tmp_path / 'cache'}"]
    assert evaluate_main([str(tmp_path / "runs" / name), *tiny_eval]) == 0
    metrics = client.get_run(run.info.run_id).data.metrics
    for key in ("eval/inv/acc_enc", "eval/equi/r2_enc", "eval/equi/r2_enc/rotation", "eval/equi/r2_abs/rotation",
                "eval/eff_rank_enc"):
        assert key in metrics, key
    assert not [key for key in metrics if key.startswith(("eval/inv/acc_agg", "eval/equi/r2_agg", "eval/path"))]
