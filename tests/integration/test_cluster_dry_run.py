"""The cluster dry run (infra/dry_run.py, the command the infra README gives): the real job submitted to a
two-node Ray cluster (`ray start --head` + `ray start --address`), shards streamed from the S3 server,
checkpoints written to it, metrics logged to an `mlflow server` over HTTP."""

from __future__ import annotations

import pytest

from infra.dry_run import dry_run
from tests.helpers.runs import DATA_CACHE, PROBE_METRICS

pytestmark = pytest.mark.integration


def test_the_job_spans_two_ray_nodes_and_leaves_its_run_in_mlflow_and_its_checkpoint_in_s3(s3_endpoint, tmp_path):
    report = dry_run(tmp_path, s3_endpoint=s3_endpoint, cache_dir=str(DATA_CACHE))

    assert report.job_status == "SUCCEEDED", report.job_output[-3000:]
    assert "[seq-jepa] finished:" in report.job_output
    assert len(report.nodes) == 2
    assert len(report.worker_nodes) == 2 and set(report.worker_nodes) == set(report.nodes), \
        f"one training worker per node expected: workers on {report.worker_nodes}, nodes {report.nodes}"
    assert report.mlflow_status == "FINISHED"
    for key in PROBE_METRICS:
        assert key in report.mlflow_metrics, f"{key} missing from the MLflow server"
    assert {".metadata", "__0_0.distcp", "__1_0.distcp"} <= set(report.checkpoint_files), report.checkpoint_files
    assert report.problems() == []
