"""MLflow tracking on a real sqlite store: the experiments the project creates and the URIs it accepts."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from trainer.errors import ConfigError
from trainer.tracking import open_run, resolve_tracking_uri


def test_new_experiments_open_in_the_model_training_view(mlflow_uri):
    run_id, resumed = open_run(mlflow_uri, "seq-jepa", "a-run")
    assert not resumed
    client = MlflowClient(mlflow_uri)
    experiment = client.get_experiment(client.get_run(run_id).info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # not MLflow 3's GenAI view


def test_a_bare_folder_is_not_taken_for_a_tracking_uri(tmp_path):
    with pytest.raises(ConfigError, match=f"tracking.tracking_uri={tmp_path} is not a URI; use "
                                          f"sqlite:///{tmp_path}/mlflow.db"):
        resolve_tracking_uri(str(tmp_path))
