"""MLflow tracking: the driver owns the run (params, tags, config); rank 0 logs metrics into it.

Creating the run on the driver gives one run per training job whatever the number of workers, and
lets a resumed job (same `run.name`) continue the same MLflow run.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import yaml

from trainer.config import Config, params_of, to_dict
from trainer.errors import ConfigError, TrackingError, describe
from trainer.redact import redact_text, redact_tree, redact_value

RUN_NAME_TAG = "seq_jepa.run_name"  # a training run's `run.name`: how a resumed job finds its MLflow run
METHOD_TAG = "method"  # model.method: the MLflow UI compares methods side by side
UNTRAINED_TAG = "untrained"  # "true" for a run with optim.lr=0: the untrained-encoder floor of every comparison
# A sweep in MLflow: one parent run, one child run per trial (set by sweeps/, read by its report too).
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own tag: the UI nests the child under its parent run
SWEEP_TAG = "seq_jepa.sweep"
TRIAL_TAG = "seq_jepa.trial_id"
PARAMS_TAG = "seq_jepa.trial_params"  # the trial's swept values, short, for labels in the report
VARIANT_TAG = "seq_jepa.variant"  # the trial's named variant (a sweep's `variants`): a row of the methods table
ROLE_TAG = "seq_jepa.role"  # "sweep" on a sweep's parent run
# MLflow 3's UI opens an experiment without a kind in its GenAI view (traces, evaluations): ask for the
# model-training view of runs and metrics instead.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


def resolve_tracking_uri(uri: str) -> str:
    """MLFLOW_TRACKING_URI wins; `~` in a sqlite path is expanded and its folder created."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or uri
    if uri.startswith("sqlite:///"):
        path = Path(os.path.expanduser(uri[len("sqlite:///"):])).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    if "://" not in uri:
        raise ConfigError(f"tracking.tracking_uri={uri} is not a URI; use sqlite:///{uri.rstrip('/')}/mlflow.db (a "
                          "local store) or http://HOST:PORT (a tracking server)")
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
    return client.create_experiment(name, artifact_location=artifact_location, tags=EXPERIMENT_TAGS)


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


def metric_steps(uri: str, run_id: str, key: str) -> set[int]:
    """The steps at which a run logged metric `key`."""
    return set(metric_values(uri, run_id, key))


def metric_values(uri: str, run_id: str, key: str) -> dict[int, float]:
    """Metric `key` of a run by step; a step logged twice keeps its last value."""
    history = sorted(_client(uri).get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
    return {m.step: m.value for m in history}


def latest_metrics(uri: str, run_id: str, prefix: str = "") -> dict[str, float]:
    """Each metric's last value in a run, those whose key starts with `prefix`."""
    return {k: v for k, v in _client(uri).get_run(run_id).data.metrics.items() if k.startswith(prefix)}


def open_run(uri: str, experiment: str, name: str, tags: dict[str, str] | None = None) -> tuple[str, bool]:
    """(run_id, resumed): the run named `name` in the experiment, continued, or a new one with `tags`.
    An unreachable tracking server is one TrackingError before anything starts."""
    bound_http_retries()
    try:
        return _open_run(uri, experiment, name, tags)
    except Exception as err:  # noqa: BLE001 - connection refused, DNS, 5xx, auth: one line with the fix
        if uri.startswith(("http://", "https://")):
            raise TrackingError(f"cannot reach the MLflow tracking server at {redact_text(uri)} "
                                f"({describe(err)}); start it, fix tracking.tracking_uri "
                                "(or MLFLOW_TRACKING_URI), or use a local store such as "
                                "tracking.tracking_uri=sqlite:///~/seq-jepa/mlflow.db") from None
        raise


def _open_run(uri: str, experiment: str, name: str, tags: dict[str, str] | None) -> tuple[str, bool]:
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
                "encoder": config.model.encoder, METHOD_TAG: config.model.method,
                UNTRAINED_TAG: str(config.optim.lr == 0).lower(), **(tags or {})}
    run_id, resumed = open_run(uri, config.tracking.experiment, config.run.name, run_tags)
    if resumed:
        return run_id, True
    log_params(uri, run_id, params_of(config))
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
    """Rank 0's handle on the run. A tracking server outage never stops training: metric points are
    buffered and sent once the server answers again (retried at most every `retry_every_s`).

    A resumed run replays the steps after its checkpoint; points at steps the run already holds for a
    metric are not sent again, so every metric has one point per step.
    """

    def __init__(self, uri: str | None, run_id: str | None, enabled: bool, resumed: bool = False,
                 retry_every_s: float = 30.0, max_buffered: int = 100_000):
        bound_http_retries()
        self.uri, self.run_id = uri, run_id
        self.client = _client(uri) if enabled and uri and run_id else None
        self.resumed, self.retry_every_s, self.max_buffered = resumed, retry_every_s, max_buffered
        self._logged_through: dict[str, int] = {}  # metric -> last step the run held when this run resumed
        self._buffer: list = []
        self._failing_since: float | None = None
        self._last_try = 0.0
        self.dropped = 0

    def _already_logged(self, key: str, step: int) -> bool:
        if not self.resumed:
            return False
        if key not in self._logged_through:
            history = self.client.get_metric_history(self.run_id, key)
            self._logged_through[key] = max((m.step for m in history), default=-1)
        return step <= self._logged_through[key]

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        if self.client is None:
            return
        now = int(time.time() * 1000)
        self._buffer += [Metric(k, float(v), now, step) for k, v in metrics.items()]
        if len(self._buffer) > self.max_buffered:
            self.dropped += len(self._buffer) - self.max_buffered
            self._buffer = self._buffer[-self.max_buffered:]
        self._send()

    def _send(self, force: bool = False) -> bool:
        if not self._buffer:
            return True
        if self._failing_since is not None and not force and time.monotonic() - self._last_try < self.retry_every_s:
            return False
        self._last_try = time.monotonic()
        try:
            batch = [m for m in self._buffer if not self._already_logged(m.key, m.step)]
            for start in range(0, len(batch), 1000):  # MLflow accepts at most 1000 metrics per batch
                self.client.log_batch(self.run_id, metrics=batch[start:start + 1000])
        except Exception as err:  # noqa: BLE001 - any tracking failure must not stop training
            if self._failing_since is None:
                self._failing_since = time.monotonic()
                warnings.warn(f"MLflow at {redact_text(self.uri)} is unreachable ("
                              f"{describe(err)}); training continues and metrics are buffered until it answers")
            return False
        if self._failing_since is not None:
            warnings.warn(f"MLflow answers again: sent {len(batch)} buffered metric points")
            self._failing_since = None
        self._buffer = []
        return True

    def flush(self) -> None:
        """Send what is buffered (end of training); warn about what could not be sent."""
        if self.client is not None and not self._send(force=True):
            warnings.warn(f"{len(self._buffer)} metric points could not be sent to MLflow at "
                          f"{redact_text(self.uri)}; the run's metrics there are incomplete")
        if self.dropped:
            warnings.warn(f"{self.dropped} metric points were dropped while MLflow was unreachable (buffer full)")

    def _guard(self, action) -> None:
        if self.client is None:
            return
        try:
            action()
        except Exception as err:  # noqa: BLE001 - any tracking failure must not kill training
            warnings.warn(f"MLflow call failed ({describe(err)}); training continues")

    def set_tag(self, key: str, value: str) -> None:
        self._guard(lambda: self.client.set_tag(self.run_id, key, value))

    def log_artifact(self, path: str, artifact_path: str | None = None) -> None:
        self._guard(lambda: self.client.log_artifact(self.run_id, path, artifact_path))


def bound_http_retries() -> None:
    """MLflow's HTTP client retries a dead server for minutes by default; a few seconds is enough here."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
