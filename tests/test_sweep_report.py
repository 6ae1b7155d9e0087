"""The report: MLflow runs (a real sqlite store) -> table and PNG figures, by sweep name or a whole experiment."""

from __future__ import annotations

import pytest

from sweeps.report import child_runs, experiment_runs, heatmap, main, markdown_table, varying_keys
from trainer.tracking import PARAMS_TAG, PARENT_TAG, ROLE_TAG, SWEEP_TAG, log_params, open_run

PNG = b"\x89PNG\r\n\x1a\n"


def accuracy(m_tr: int, m_val: int, actions: bool) -> float:
    """A made-up but paper-shaped surface: rises with M_val up to M_tr, a little higher with actions."""
    return 40.0 + 3.0 * min(m_val, m_tr) + (2.0 if actions else 0.0)


@pytest.fixture
def sweep_store(mlflow_uri):
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    parent, _ = open_run(mlflow_uri, "sweeps", "grid", {SWEEP_TAG: "grid", ROLE_TAG: "sweep"})
    client = MlflowClient(mlflow_uri)
    for m_tr in (1, 2, 3):
        for actions in (True, False):
            tags = {PARENT_TAG: parent, SWEEP_TAG: "grid", PARAMS_TAG: f"seq_len={m_tr} action_cond={actions}"}
            run, _ = open_run(mlflow_uri, "sweeps", f"grid-{m_tr}-{actions}", tags)
            log_params(mlflow_uri, run, {"model.seq_len": m_tr, "model.action_cond": actions, "run.name": run})
            metrics = [Metric(f"eval/inv/acc_agg/M{k}", accuracy(m_tr, k, actions), 0, 10) for k in range(1, 5)]
            metrics += [Metric("eval/equi/r2_enc/rotation", 0.5 if actions else 0.2, 0, 10),
                        Metric("inv/acc_agg", 30.0, 0, 10), Metric("equi/r2_enc", 0.4, 0, 10)]
            client.log_batch(run, metrics=metrics)
            client.set_terminated(run)
    return parent


def test_runs_table_and_figures_from_a_sweep(sweep_store, mlflow_uri, tmp_path):
    runs = child_runs(mlflow_uri, sweep_store)
    assert len(runs) == 6
    assert varying_keys(runs) == ["model.seq_len", "model.action_cond"]  # M_tr first, run names left out
    table = markdown_table(runs, varying_keys(runs))
    assert table.count("\n") == 7 and "| acc M_val=4 |" in table.splitlines()[0]
    assert "| grid-3-True | 3 | True | FINISHED | 30.0 | 0.400 | 45.0 | 48.0 | 51.0 | 51.0 | – | 0.500 |" in table

    assert main(["--sweep", "grid", "--experiment", "sweeps", "--tracking-uri", mlflow_uri,
                 "--out", str(tmp_path / "out")]) == 0
    for name in ("heatmap_acc_mtr_mval.png", "inv_equi_scatter.png", "acc_vs_mval.png"):
        assert (tmp_path / "out" / name).read_bytes()[:8] == PNG
    from mlflow.tracking import MlflowClient

    attached = {a.path for a in MlflowClient(mlflow_uri).list_artifacts(sweep_store, "report")}
    assert "report/heatmap_acc_mtr_mval.png" in attached


def test_heatmap_draws_one_panel_per_setting_of_the_other_keys(sweep_store, mlflow_uri, tmp_path):
    import matplotlib.image

    runs = child_runs(mlflow_uri, sweep_store)
    one_panel = heatmap([r for r in runs if r.params["model.action_cond"] == "True"], ["model.seq_len"],
                        tmp_path / "one.png")
    two_panels = heatmap(runs, ["model.seq_len", "model.action_cond"], tmp_path / "two.png")
    width_one = matplotlib.image.imread(one_panel).shape[1]
    width_two = matplotlib.image.imread(two_panels).shape[1]
    assert width_two > 1.3 * width_one
    assert heatmap([r for r in runs if False], ["model.seq_len"], tmp_path / "none.png") is None


def test_all_runs_of_an_experiment_and_clear_errors(sweep_store, mlflow_uri, tmp_path, capsys):
    assert len(experiment_runs(mlflow_uri, "sweeps")) == 6  # the sweep's parent run has no config: left out
    assert main(["--all-runs", "--experiment", "sweeps", "--tracking-uri", mlflow_uri,
                 "--out", str(tmp_path / "all")]) == 0
    assert (tmp_path / "all" / "trials.md").is_file()
    assert main(["--sweep", "nope", "--experiment", "sweeps", "--tracking-uri", mlflow_uri]) == 2
    assert "no sweep named 'nope'" in capsys.readouterr().err
    assert main(["--all-runs", "--experiment", "missing", "--tracking-uri", mlflow_uri]) == 2
    assert "no MLflow experiment named 'missing'" in capsys.readouterr().err
