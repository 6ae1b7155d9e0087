"""Training runs out of MLflow, and how every report reads them (report.py, table1.py, contrast.py).

A `Run` holds a run's params and metrics as MLflow stored them. Readers ask it under the current names:
`param(key)` and `metric(key)` fall back to the name a key had in runs logged before version 0.2
(`model.action_cond` for `seq_jepa.action_cond`: trainer/config/legacy.py; `inv/acc_agg` for
`val/inv/acc_agg`: trainer/metric_names.py), so a report of old runs still works. What a run's method is
(its family, label, whether it has an aggregate z_AGG) comes from the catalogue, trainer/methods/catalog.py.

`top1` is the one answer to "the top-1 of this run": a method with an aggregate is read on z_AGG at an
inference length M_val (`eval/inv/acc_agg/M{k}`, by default M_val = M_tr, `model.seq_len`), any other on its
encoder output (`eval/inv/acc_enc`, whatever M_val).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trainer import metric_names as names
from trainer.config.legacy import OLD_NAMES
from trainer.methods.catalog import CATALOG, DEFAULT_METHOD, MethodEntry
from trainer.redact import redact_text

SEQ_LEN = "model.seq_len"  # M_tr
METHOD = "model.method"
CURRENT_NAMES = {old: new for new, old in OLD_NAMES.items()}  # old dotted param key -> its current name
# Equivariance, most telling first: rotation is what an untrained encoder cannot read
# (docs/paper-and-original-code.md#probe-lessons-at-small-scale).
R2_KEYS = (names.per_group(names.EVAL_R2_ENC, "rotation"), names.EVAL_R2_ENC,
           names.per_group(names.VAL_R2_ENC, "rotation"), names.VAL_R2_ENC)


def current_name(key: str) -> str:
    """A param key under its current name (`model.action_cond` -> `seq_jepa.action_cond`)."""
    return CURRENT_NAMES.get(key, key)


@dataclass
class Run:
    run_id: str
    name: str
    status: str
    params: dict[str, str]  # as logged: current or, in an old run, previous names
    metrics: dict[str, float]  # as logged, the same
    label: str  # the swept values, e.g. "seq_len=3 action_cond=True"
    tags: dict[str, str] = field(default_factory=dict)

    def param(self, key: str, default: str | None = None) -> str | None:
        """A param by its current dotted name, read under its old name in a run logged before the rename."""
        if key in self.params:
            return self.params[key]
        old = OLD_NAMES.get(key)
        return self.params.get(old, default) if old is not None else default

    def metric(self, key: str, default: float | None = None) -> float | None:
        """A metric by its current name (trainer/metric_names.py), read under its old name in an old run."""
        if key in self.metrics:
            return self.metrics[key]
        old = names.previous_name(key)
        return self.metrics.get(old, default) if old is not None else default

    @property
    def method(self) -> str:
        """`model.method`, or the default method for a run that did not log one."""
        return self.param(METHOD) or DEFAULT_METHOD

    @property
    def entry(self) -> MethodEntry | None:
        """The method's catalogue entry; None for a method the catalogue does not know (a removed one)."""
        return CATALOG.get(self.method)

    @property
    def method_label(self) -> str:
        return self.entry.label if self.entry is not None else self.method

    @property
    def has_aggregate(self) -> bool:
        """Whether the method has a z_AGG; for an unknown method, whether z_AGG top-1s were logged."""
        return self.entry.aggregate if self.entry is not None else bool(self.acc_by_mval())

    @property
    def action_cond(self) -> bool | None:
        """The method's own `<method>.action_cond` setting; None for a method without one."""
        value = self.param(f"{self.method}.action_cond")
        return None if value is None else value.strip().lower() == "true"

    @property
    def seq_len(self) -> int | None:
        value = self.param(SEQ_LEN)
        return int(value) if value is not None else None

    def acc_by_mval(self) -> dict[int, float]:
        """z_AGG top-1 by inference length M_val (empty for a method without an aggregate)."""
        found = ((names.EVAL_ACC_AGG_M.match(k), v) for k, v in self.metrics.items())
        return dict(sorted((int(m.group(1)), v) for m, v in found if m))

    def top1_key(self, m_val: int | None = None) -> str | None:
        """The metric holding the run's top-1 at M_val = `m_val` (None: at its M_tr): z_AGG's for a method with
        an aggregate, else the encoder's (the same at every M_val). None: an aggregate, but no M_tr logged."""
        if not self.has_aggregate:
            return names.EVAL_ACC_ENC
        m_val = m_val if m_val is not None else self.seq_len
        return names.eval_acc_agg(m_val) if m_val is not None else None

    def top1(self, m_val: int | None = None) -> float | None:
        """The offline top-1 (%) at M_val = `m_val`, by default at M_tr (see `top1_key`); None if not logged."""
        key = self.top1_key(m_val)
        return self.metric(key) if key is not None else None

    def accuracy(self) -> tuple[str, float] | None:
        """(key, top-1) at M_val = M_tr, else the online probe's of the last evaluated epoch."""
        key = self.top1_key()
        if key is not None and self.metric(key) is not None:
            return key, self.metric(key)
        online = names.VAL_ACC_AGG if self.has_aggregate else names.VAL_ACC_ENC
        return (online, self.metric(online)) if self.metric(online) is not None else None

    def equivariance(self) -> tuple[str, float] | None:
        """(key, R²) of the relative transformation from encoder pairs: the first of `R2_KEYS` logged."""
        return next(((k, self.metric(k)) for k in R2_KEYS if self.metric(k) is not None), None)


# ---------------------------------------------------------------------------------------------
# Runs out of MLflow.


def _to_run(mlflow_run) -> Run:
    from trainer.tracking import PARAMS_TAG

    tags = mlflow_run.data.tags
    name = tags.get("mlflow.runName", mlflow_run.info.run_id)
    return Run(mlflow_run.info.run_id, name, mlflow_run.info.status, dict(mlflow_run.data.params),
               dict(mlflow_run.data.metrics), tags.get(PARAMS_TAG) or name, dict(tags))


def _search(uri: str, experiment_ids: list[str], filter_string: str) -> list:
    from mlflow.tracking import MlflowClient

    client, runs, token = MlflowClient(uri), [], None
    while True:
        page = client.search_runs(experiment_ids, filter_string, max_results=500, page_token=token,
                                  order_by=["attributes.start_time ASC"])
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def child_runs(uri: str, parent_run_id: str) -> list[Run]:
    """A sweep's trials: the runs nested under its parent run."""
    from mlflow.tracking import MlflowClient

    experiment_id = MlflowClient(uri).get_run(parent_run_id).info.experiment_id
    return [_to_run(r) for r in _search(uri, [experiment_id], f"tags.`mlflow.parentRunId` = '{parent_run_id}'")]


def experiment_runs(uri: str, experiment: str) -> list[Run]:
    """Every training run of an experiment (sweep parent runs left out)."""
    from mlflow.tracking import MlflowClient

    found = MlflowClient(uri).get_experiment_by_name(experiment)
    if found is None:
        raise LookupError(f"no MLflow experiment named '{experiment}' at {redact_text(uri)}")
    return [_to_run(r) for r in _search(uri, [found.experiment_id], "") if SEQ_LEN in r.data.params]


def metric_history(uri: str, run_id: str, key: str) -> dict[int, float]:
    """A metric of a run by step (its last value at a step logged twice); under its old name in an old run."""
    from trainer.tracking import metric_values

    found = metric_values(uri, run_id, key)
    old = names.previous_name(key)
    return found if found or old is None else metric_values(uri, run_id, old)


def find_sweep(uri: str, experiment: str, name: str) -> str:
    """The id of the newest parent run of the sweep `name`."""
    from mlflow.tracking import MlflowClient

    from trainer.tracking import ROLE_TAG, SWEEP_TAG

    found = MlflowClient(uri).get_experiment_by_name(experiment)
    runs = [] if found is None else _search(uri, [found.experiment_id],
                                            f"tags.`{SWEEP_TAG}` = '{name}' and tags.`{ROLE_TAG}` = 'sweep'")
    if not runs:
        raise LookupError(f"no sweep named '{name}' in MLflow experiment '{experiment}' at {redact_text(uri)}")
    return runs[-1].info.run_id
