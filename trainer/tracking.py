"""MLflow tracking: the driver owns the run (params, tags, config); rank 0 logs metrics into it.

Creating the run on the driver gives one run per training job whatever the number of workers, and
lets a resumed job (same `run.name`) continue the same MLflow run.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import warnings
from pathlib import Path

import yaml

from trainer.config import Config, flatten, to_dict
from trainer.redact import redact_text, redact_tree, redact_value

RUN_NAME_TAG = "seq_jepa.run_name"


def resolve_tracking_uri(uri: str) -> str:
    """MLFLOW_TRACKING_URI wins; `~` in a sqlite path is expanded and its folder created."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or uri
    if uri.startswith("sqlite:///"):
        path = Path(os.path.expanduser(uri[len("sqlite:///"):])).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    if "://" not in uri:  # a bare folder: MLflow's file store, kept for compatibility
        return str(Path(os.path.expanduser(uri)).resolve())
    return uri


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _experiment_id(client, uri: str, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    artifact_location = None
    if uri.startswith("sqlite:///"):
        # Next to the database, not in whatever folder the job happens to run from.
        artifact_location = (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").as_uri()
    return client.create_experiment(name, artifact_location=artifact_location)


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or os.environ.get("GIT_COMMIT", "unknown")
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("GIT_COMMIT", "unknown")


def _find_run(client, experiment_id: str, name: str) -> str | None:
    existing = client.search_runs([experiment_id], filter_string=f"tags.`{RUN_NAME_TAG}` = '{name}'",
                                  max_results=1, order_by=["attributes.start_time DESC"])
    return existing[0].info.run_id if existing else None


def find_run(config: Config, uri: str) -> str | None:
    """The id of the MLflow run of `config.run.name`, or None if this store has none."""
    client = _client(uri)
    experiment = client.get_experiment_by_name(config.tracking.experiment)
    return None if experiment is None else _find_run(client, experiment.experiment_id, config.run.name)


def open_run(uri: str, experiment: str, name: str, tags: dict[str, str] | None = None) -> tuple[str, bool]:
    """(run_id, resumed): the run named `name` in the experiment, continued, or a new one with `tags`."""
    client = _client(uri)
    experiment_id = _experiment_id(client, uri, experiment)
    run_id = _find_run(client, experiment_id, name)
    if run_id is not None:
        client.update_run(run_id, status="RUNNING")
        return run_id, True
    run = client.create_run(experiment_id, run_name=name, tags={RUN_NAME_TAG: name, "git_commit": git_commit(),
                                                                **(tags or {})})
    return run.info.run_id, False


def log_params(uri: str, run_id: str, params: dict[str, object]) -> None:
    from mlflow.entities import Param

    batch = [Param(k, str(redact_value(k, v))) for k, v in params.items()]  # secrets masked
    client = _client(uri)
    for start in range(0, len(batch), 100):  # MLflow accepts at most 100 params per batch
        client.log_batch(run_id, params=batch[start:start + 100])


def start_or_resume_run(config: Config, uri: str, tags: dict[str, str] | None = None) -> tuple[str, bool]:
    """Return (run_id, resumed). A run with the same `run.name` in the experiment is continued.

    `tags` are added to a new run (a sweep's trial passes `mlflow.parentRunId` to nest under its sweep).
    """
    run_tags = {"dataset": config.data.dataset, "parallelism": config.scaling.parallelism,
                "encoder": config.model.encoder, **(tags or {})}
    run_id, resumed = open_run(uri, config.tracking.experiment, config.run.name, run_tags)
    if resumed:
        return run_id, True
    log_params(uri, run_id, flatten(to_dict(config)))
    log_text(uri, run_id, "config.yaml", yaml.safe_dump(redact_tree(to_dict(config)), sort_keys=False))
    return run_id, False


def log_text(uri: str, run_id: str, filename: str, text: str, artifact_path: str | None = None) -> None:
    """A small text file (a resolved config, a table) as an artifact of the run; URL credentials masked."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / filename
        path.write_text(redact_text(text))
        _client(uri).log_artifact(run_id, str(path), artifact_path)


def finish_run(uri: str, run_id: str, status: str) -> None:
    _client(uri).set_terminated(run_id, status=status)


class MetricsLogger:
    """Rank 0's handle on the run. A tracking server outage warns once and never stops training."""

    def __init__(self, uri: str | None, run_id: str | None, enabled: bool):
        self.run_id = run_id
        self.client = _client(uri) if enabled and uri and run_id else None
        self._warned = False

    def _guard(self, action, *args) -> None:
        if self.client is None:
            return
        try:
            action(*args)
        except Exception as err:  # noqa: BLE001 - any tracking failure must not kill training
            if not self._warned:
                warnings.warn(f"MLflow logging failed ({type(err).__name__}: {err}); training continues")
                self._warned = True

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric
        import time

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        self._guard(lambda: self.client.log_batch(self.run_id, metrics=batch))

    def set_tag(self, key: str, value: str) -> None:
        self._guard(lambda: self.client.set_tag(self.run_id, key, value))

    def log_artifact(self, path: str, artifact_path: str | None = None) -> None:
        self._guard(lambda: self.client.log_artifact(self.run_id, path, artifact_path))
