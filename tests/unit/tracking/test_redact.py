"""Secrets never reach MLflow: credentials in URLs and secret-named values are masked in params and artifacts."""

from __future__ import annotations

from pathlib import Path

from trainer.config import load_config, to_dict
from trainer.redact import MASK, redact_text, redact_tree
from trainer.tracking import log_params, open_run, start_or_resume_run

KEY_ID, SECRET = "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY"
ENDPOINT = f"http://{KEY_ID}:{SECRET}@127.0.0.1:9000"


def test_urls_lose_their_credentials_and_secret_named_values_are_masked():
    assert redact_text(f"endpoint {ENDPOINT}/bucket and https://u@mlflow:5000") == \
        f"endpoint http://{MASK}@127.0.0.1:9000/bucket and https://{MASK}@mlflow:5000"
    assert redact_text("s3://bucket/prefix sqlite:////tmp/mlflow.db") == "s3://bucket/prefix sqlite:////tmp/mlflow.db"
    tree = {"data": {"s3_endpoint_url": ENDPOINT, "batch_size": 32},
            "auth": {"api_key": "k", "password": "p", "aws_secret_access_key": "s", "token": "t",
                     "tokenizer": "bpe", "keys": ["x"]},
            "overrides": [f"data.s3_endpoint_url={ENDPOINT}"]}
    clean = redact_tree(tree)
    assert clean["data"] == {"s3_endpoint_url": f"http://{MASK}@127.0.0.1:9000", "batch_size": 32}
    assert clean["auth"] == {"api_key": MASK, "password": MASK, "aws_secret_access_key": MASK, "token": MASK,
                             "tokenizer": "bpe", "keys": ["x"]}
    assert SECRET not in str(clean) and tree["data"]["s3_endpoint_url"] == ENDPOINT  # the input is untouched


def test_mlflow_params_and_config_artifact_hold_no_secret(mlflow_uri, tmp_path: Path):
    from mlflow.tracking import MlflowClient

    config = load_config(None, [f"data.s3_endpoint_url={ENDPOINT}", "run.name=secret-test",
                                f"tracking.tracking_uri={mlflow_uri}"])
    assert config.data.s3_endpoint_url == ENDPOINT  # the run itself still gets the real endpoint
    run_id, _ = start_or_resume_run(config, mlflow_uri)
    sweep_run, _ = open_run(mlflow_uri, "sweeps", "s")
    log_params(mlflow_uri, sweep_run, {"sweep.overrides": f"data.s3_endpoint_url={ENDPOINT}", "db.password": "p"})

    client = MlflowClient(mlflow_uri)
    params = client.get_run(run_id).data.params
    assert params["data.s3_endpoint_url"] == f"http://{MASK}@127.0.0.1:9000"
    assert params["data.batch_size"] == str(to_dict(config)["data"]["batch_size"])
    masked = f"data.s3_endpoint_url=http://{MASK}@127.0.0.1:9000"
    assert client.get_run(sweep_run).data.params == {"sweep.overrides": masked, "db.password": MASK}
    artifact = Path(client.download_artifacts(run_id, "config.yaml", str(tmp_path)))
    text = artifact.read_text()
    assert "s3_endpoint_url" in text and SECRET not in text and KEY_ID not in text
    for run in (run_id, sweep_run):
        data = client.get_run(run).data
        assert SECRET not in str(data.params) + str(data.tags)
