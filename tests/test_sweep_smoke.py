"""The smoke sweep end to end: real Ray Tune trials, each a real TorchTrainer with 2 workers, MLflow
child runs under the sweep's parent run, the report's figures; then the same sweep resumed."""

from __future__ import annotations

from pathlib import Path

import pytest

from sweeps.report import child_runs, find_sweep
from sweeps.run import main as sweep_main
from sweeps.trial import SWEEP_TAG

pytestmark = pytest.mark.integration

SMOKE = Path(__file__).resolve().parents[1] / "sweeps" / "smoke.yaml"


def test_smoke_sweep_trains_trials_logs_child_runs_and_draws_the_report(ray_local, fashion_mnist_shards, tmp_path,
                                                                        mlflow_uri):
    from mlflow.tracking import MlflowClient

    args = [str(SMOKE), f"storage_path={tmp_path / 'sweeps'}", f"data.shards={fashion_mnist_shards}",
            "data.prepare=false", f"tracking.tracking_uri={mlflow_uri}"]
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
        assert any(k.startswith("inv/") for k in run.metrics) and any(k.startswith("equi/") for k in run.metrics)
        assert {f"eval/inv/acc_agg/M{k}" for k in (1, 2, 3)} <= set(run.metrics)
        assert "eval/equi/r2_enc/rotation" in run.metrics
        # rank 0 alone logs: one value per logged step, not one per worker
        history = client.get_metric_history(run.run_id, "train/loss")
        assert len(history) == len({m.step for m in history}) > 0
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

    # The same command again resumes the finished sweep: no trial reruns, no new MLflow run.
    assert sweep_main(args) == 0
    assert len(client.search_runs([experiment])) == 3
    assert {r.run_id for r in child_runs(mlflow_uri, parent)} == {r.run_id for r in runs}
