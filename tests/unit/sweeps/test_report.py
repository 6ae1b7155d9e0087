"""The report: MLflow runs (a real sqlite store) -> table and PNG figures, by sweep name or a whole experiment."""

from __future__ import annotations

import pytest

from sweeps.report import heatmap, main, markdown_table, varying_keys
from sweeps.runs import Run, child_runs, experiment_runs
from trainer.tracking import (
    PARAMS_TAG,
    PARENT_TAG,
    ROLE_TAG,
    SWEEP_TAG,
    UNTRAINED_TAG,
    VARIANT_TAG,
    log_params,
    open_run,
)

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
            log_params(mlflow_uri, run, {"model.seq_len": m_tr, "seq_jepa.action_cond": actions, "run.name": run})
            metrics = [Metric(f"eval/inv/acc_agg/M{k}", accuracy(m_tr, k, actions), 0, 10) for k in range(1, 5)]
            metrics += [Metric("eval/equi/r2_enc/rotation", 0.5 if actions else 0.2, 0, 10),
                        Metric("val/inv/acc_agg", 30.0, 0, 10), Metric("val/equi/r2_enc", 0.4, 0, 10)]
            client.log_batch(run, metrics=metrics)
            client.set_terminated(run)
    return parent


def test_runs_table_and_figures_from_a_sweep(sweep_store, mlflow_uri, tmp_path):
    runs = child_runs(mlflow_uri, sweep_store)
    assert len(runs) == 6
    assert varying_keys(runs) == ["model.seq_len", "seq_jepa.action_cond"]  # M_tr first, run names left out
    table = markdown_table(runs, varying_keys(runs))
    assert table.count("\n") == 7 and "| acc M_val=4 |" in table.splitlines()[0]
    assert "| val/inv/acc_agg | val/equi/r2_enc |" in table.splitlines()[0]
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
    one_panel = heatmap([r for r in runs if r.param("seq_jepa.action_cond") == "True"], ["model.seq_len"],
                        tmp_path / "one.png")
    two_panels = heatmap(runs, ["model.seq_len", "seq_jepa.action_cond"], tmp_path / "two.png")
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


@pytest.fixture
def methods_store(mlflow_uri):
    """A methods sweep's runs: two seeds of seq-JEPA and SimCLR, one of the untrained floor."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    parent, _ = open_run(mlflow_uri, "sweeps", "methods", {SWEEP_TAG: "methods", ROLE_TAG: "sweep"})
    client = MlflowClient(mlflow_uri)
    trials = [("seq_jepa", "seq_jepa", 0, 60.0), ("seq_jepa", "seq_jepa", 1, 62.0), ("simclr", "simclr", 0, 55.0),
              ("simclr", "simclr", 1, 57.0), ("untrained", "seq_jepa", 0, 40.0)]
    for variant, method, seed, top1 in trials:
        tags = {PARENT_TAG: parent, SWEEP_TAG: "methods", PARAMS_TAG: f"variant={variant} seed={seed}",
                VARIANT_TAG: variant, UNTRAINED_TAG: str(variant == "untrained").lower()}
        run, _ = open_run(mlflow_uri, "sweeps", f"methods-{variant}-{seed}", tags)
        log_params(mlflow_uri, run, {"model.seq_len": 3, "model.method": method, "train.seed": seed})
        metrics = {"eval/inv/acc_enc": top1 - 5, "eval/equi/r2_enc": 0.5, "eval/equi/r2_enc/rotation": top1 / 100,
                   "eval/equi/r2_abs/rotation": 0.4, "eval/eff_rank_enc": 30.0 + seed}
        if method == "seq_jepa":
            metrics.update({"eval/inv/acc_agg/M1": top1 - 10, "eval/inv/acc_agg/M3": top1,
                            "eval/inv/acc_agg/M6": top1 + 3})
        client.log_batch(run, metrics=[Metric(k, v, 0, 10) for k, v in metrics.items()])
        client.set_terminated(run)
    return parent


def test_table1_one_row_per_variant_averaged_over_seeds(methods_store, mlflow_uri, tmp_path):
    from sweeps.table1 import table1_markdown, table1_rows

    rows = table1_rows(child_runs(mlflow_uri, methods_store))
    assert [(r.variant, r.family, len(r.runs)) for r in rows] == [
        ("seq_jepa", "seq-JEPA", 2), ("simclr", "invariant", 2), ("untrained", "floor", 1)]
    seq_jepa, simclr, floor = rows
    assert seq_jepa.value("top-1") == 61.0 and seq_jepa.value("best M_val top-1") == 64.0  # z_AGG, M_val = M_tr = 3
    assert simclr.value("top-1") == 51.0 and simclr.value("best M_val top-1") is None  # the encoder: no aggregate
    assert floor.value("top-1") == 40.0 and seq_jepa.value("eff. rank") == 30.5
    table = table1_markdown(rows)
    assert "| seq_jepa | seq-JEPA | 2 | 61.0 | 64.0 | 56.0 | 0.500 | 0.610 | 0.400 | 30.5 |" in table  # label
    assert "| simclr | SimCLR | 2 | 51.0 | – |" in table
    from sweeps.contrast import contrast_rows

    [contrast] = contrast_rows(child_runs(mlflow_uri, methods_store), [])  # seq-JEPA against the floor, no baseline
    assert contrast["rot/actions"] == pytest.approx(0.61) and contrast["top1/untrained"] == 40.0

    assert main(["--sweep", "methods", "--experiment", "sweeps", "--tracking-uri", mlflow_uri,
                 "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "table1_scatter.png").read_bytes()[:8] == PNG
    assert "| untrained | seq-JEPA | 1 |" in (tmp_path / "out" / "table1.md").read_text()
    from mlflow.tracking import MlflowClient

    attached = {a.path for a in MlflowClient(mlflow_uri).list_artifacts(methods_store, "report")}
    assert {"report/table1.md", "report/table1_scatter.png"} <= attached


def test_the_contrast_table_puts_actions_no_actions_and_the_floor_side_by_side(mlflow_uri, tmp_path):
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from sweeps.contrast import contrast_markdown, contrast_rows

    parent, _ = open_run(mlflow_uri, "sweeps", "fidelity", {SWEEP_TAG: "fidelity", ROLE_TAG: "sweep"})
    client = MlflowClient(mlflow_uri)
    for rotation in (45, 180):
        for variant, r2, top1 in (("actions", 0.6, 50.0), ("no_actions", 0.2, 48.0), ("untrained", 0.3, 40.0)):
            tags = {PARENT_TAG: parent, SWEEP_TAG: "fidelity", VARIANT_TAG: variant}
            run, _ = open_run(mlflow_uri, "sweeps", f"fidelity-{rotation}-{variant}", tags)
            log_params(mlflow_uri, run, {"model.seq_len": 3, "data.rotation_deg": rotation,
                                         "seq_jepa.action_cond": variant != "no_actions"})
            metrics = {"eval/equi/r2_enc/rotation": r2 * rotation / 45, "eval/inv/acc_agg/M1": top1 - 5,
                       "eval/inv/acc_agg/M3": top1, "eval/inv/acc_agg/M6": top1 + 4,
                       "eval/equi/r2_agg/rotation": 0.01}
            client.log_batch(run, metrics=[Metric(k, v, 0, 10) for k, v in metrics.items()])
            client.set_terminated(run)
    rows = contrast_rows(child_runs(mlflow_uri, parent), ["data.rotation_deg"])
    assert [row["setting"] for row in rows] == ["rotation_deg=45", "rotation_deg=180"]
    assert rows[0]["rot_ratio"] == pytest.approx(3.0) and rows[1]["rot/untrained"] == pytest.approx(1.2)
    table = contrast_markdown(rows)
    assert "| rotation_deg=45 | 0.600 / 0.200 / 0.300 | 3.00x | 50.0 / 48.0 / 40.0 | 45.0 → 54.0 | 0.010 |" in table
    assert main(["--sweep", "fidelity", "--experiment", "sweeps", "--tracking-uri", mlflow_uri,
                 "--out", str(tmp_path / "out")]) == 0
    assert "| setting |" in (tmp_path / "out" / "contrast.md").read_text()


def test_table1_takes_each_method_s_family_and_label_from_the_catalogue(tmp_path):
    """A method added to the catalogue is plotted in its own family, with no list in sweeps/ to forget."""
    from sweeps.table1 import FAMILY_COLOURS, UNKNOWN, table1_markdown, table1_rows, table1_scatter
    from trainer.methods.catalog import CATALOG, INVARIANT, MethodEntry, register

    def run(method: str, seed: int, top1: float) -> Run:
        metrics = {"eval/inv/acc_enc": top1, "eval/equi/r2_enc/rotation": 0.1 * seed + 0.2}
        return Run(f"{method}-{seed}", f"{method}-{seed}", "FINISHED",
                   {"model.method": method, "model.seq_len": "3", "train.seed": str(seed)}, metrics, "")

    register(MethodEntry("my_invariant", "trainer.methods.my_invariant", "MyInvariant", INVARIANT, "My Invariant"))
    try:
        rows = table1_rows([run("my_invariant", 0, 50.0), run("my_invariant", 1, 52.0), run("retired", 0, 45.0)])
        assert [(r.variant, r.method, r.family, len(r.runs)) for r in rows] == [
            ("My Invariant", "my_invariant", "invariant", 2), ("retired", "retired", UNKNOWN, 1)]
        mine, retired = rows
        assert mine.value("top-1") == 51.0 and mine.value("best M_val top-1") is None  # no aggregate: the encoder
        assert retired.family != "equivariant" and retired.value("top-1") == 45.0  # unknown: said, not guessed
        assert "| My Invariant | My Invariant | 2 | 51.0 | – | 51.0 |" in table1_markdown(rows)
        assert table1_scatter(rows, tmp_path / "scatter.png").read_bytes()[:8] == PNG
        assert set(FAMILY_COLOURS) >= {entry.family for entry in CATALOG.values()}
    finally:
        del CATALOG["my_invariant"]


def test_one_top1_reader_by_whether_the_method_has_an_aggregate():
    metrics = {"eval/inv/acc_enc": 50.0, "eval/inv/acc_agg/M1": 55.0, "eval/inv/acc_agg/M3": 60.0}
    seq_jepa = Run("a", "a", "FINISHED", {"model.seq_len": "3"}, dict(metrics), "")  # no model.method: the default
    simclr = Run("b", "b", "FINISHED", {"model.seq_len": "3", "model.method": "simclr"}, dict(metrics), "")
    assert seq_jepa.method == "seq_jepa" and seq_jepa.has_aggregate and not simclr.has_aggregate
    assert seq_jepa.top1() == 60.0 and seq_jepa.top1(1) == 55.0 and seq_jepa.top1(2) is None  # z_AGG at M_val
    assert seq_jepa.top1_key() == "eval/inv/acc_agg/M3"
    assert simclr.top1() == 50.0 and simclr.top1(1) == 50.0 and simclr.top1_key(3) == "eval/inv/acc_enc"
    assert seq_jepa.accuracy() == ("eval/inv/acc_agg/M3", 60.0)
    online = Run("c", "c", "RUNNING", {"model.seq_len": "3"}, {"val/inv/acc_agg": 30.0}, "")
    assert online.accuracy() == ("val/inv/acc_agg", 30.0) and online.top1() is None


def test_old_runs_are_read_under_their_old_param_and_metric_names(mlflow_uri, tmp_path):
    """Runs logged before the renames (`model.action_cond`, `inv/acc_agg`, ...) next to new ones: one report."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from sweeps.contrast import contrast_rows, variant_of
    from sweeps.table1 import table1_rows

    parent, _ = open_run(mlflow_uri, "sweeps", "mixed", {SWEEP_TAG: "mixed", ROLE_TAG: "sweep"})
    client = MlflowClient(mlflow_uri)
    for era, actions in (("old", True), ("old", False), ("new", True), ("new", False)):
        run, _ = open_run(mlflow_uri, "sweeps", f"mixed-{era}-{actions}", {PARENT_TAG: parent, SWEEP_TAG: "mixed"})
        prefix, action_key = ("", "model.action_cond") if era == "old" else ("val/", "seq_jepa.action_cond")
        eff_rank = "train/eff_rank_enc" if era == "old" else "val/eff_rank_enc"
        log_params(mlflow_uri, run, {"model.seq_len": 3, action_key: actions})
        metrics = {f"{prefix}inv/acc_agg": 30.0 if actions else 28.0, f"{prefix}equi/r2_enc": 0.4,
                   f"{prefix}equi/r2_enc/rotation": 0.5 if actions else 0.2, eff_rank: 12.0,
                   "eval/inv/acc_agg/M3": 50.0 if actions else 48.0}
        client.log_batch(run, metrics=[Metric(k, v, 0, 10) for k, v in metrics.items()])
        client.set_terminated(run)
    runs = {r.name: r for r in child_runs(mlflow_uri, parent)}
    old, new = runs["mixed-old-False"], runs["mixed-new-False"]
    assert "seq_jepa.action_cond" not in old.params and old.param("seq_jepa.action_cond") == "False"
    assert new.param("seq_jepa.action_cond") == "False" and old.param("seq_jepa.num_layers") is None
    assert old.param("seq_jepa.num_layers", "–") == "–" and old.action_cond is False
    assert "val/inv/acc_agg" not in old.metrics and old.metric("val/inv/acc_agg") == 28.0
    assert old.metric("val/equi/r2_enc/rotation") == 0.2 and old.metric("val/eff_rank_enc") == 12.0
    assert old.metric("val/equi/r2_agg") is None and old.metric("val/equi/r2_agg", -1.0) == -1.0
    assert old.equivariance() == new.equivariance() == ("val/equi/r2_enc/rotation", 0.2)

    everything = list(runs.values())
    assert varying_keys(everything) == ["seq_jepa.action_cond"]  # one key for both names (M_tr is 3 throughout)
    assert varying_keys(everything, ["model.action_cond"]) == ["seq_jepa.action_cond"]
    table = markdown_table(everything, ["seq_jepa.action_cond"])
    assert "| mixed-old-False | False | FINISHED | 28.0 | 0.400 | 48.0 | – | – |" in table
    assert "| mixed-new-False | False | FINISHED | 28.0 | 0.400 | 48.0 | – | – |" in table
    assert [variant_of(r) for r in everything] == ["actions", "no_actions", "actions", "no_actions"]
    [row] = contrast_rows(everything, [])
    assert row["top1/actions"] == 50.0 and row["top1/no_actions"] == 48.0
    [seq_jepa, no_actions] = table1_rows(everything)
    assert (seq_jepa.variant, no_actions.variant) == ("seq-JEPA", "seq-JEPA (no actions)")
    assert no_actions.value("eff. rank") == 12.0


def test_learning_curves_and_the_ratio_at_every_evaluated_step(mlflow_uri, tmp_path):
    """Runs evaluated at every checkpoint (issue 25): one line per arm against steps, the floor as a band, and the
    with/without-actions ratio of rotation R² per step; runs evaluated once draw no curves."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from sweeps.learning_curves import collect, ratio_markdown

    parent, _ = open_run(mlflow_uri, "sweeps", "long", {SWEEP_TAG: "long", ROLE_TAG: "sweep"})
    client = MlflowClient(mlflow_uri)
    arms = {"actions": ("seq_jepa", 0.2), "no_actions": ("seq_jepa", 0.3), "vicreg": ("vicreg", 0.5)}
    for variant, (method, r2) in {**arms, "untrained": ("seq_jepa", -0.05)}.items():
        tags = {PARENT_TAG: parent, SWEEP_TAG: "long", VARIANT_TAG: variant,
                UNTRAINED_TAG: str(variant == "untrained").lower()}
        run, _ = open_run(mlflow_uri, "sweeps", f"long-{variant}", tags)
        log_params(mlflow_uri, run, {"model.seq_len": 3, "model.method": method,
                                     "seq_jepa.action_cond": variant != "no_actions"})
        steps = [30] if variant == "untrained" else [1200, 2400, 3600]
        metrics = []
        for i, step in enumerate(steps):
            gain = (0.2 if variant == "actions" else 0.0) * i  # the actions arm gains rotation with steps
            values = {"eval/equi/r2_enc/rotation": r2 + gain, "eval/inv/acc_enc": 40.0 + i,
                      "eval/inv/acc_agg/M6": 50.0 + i, "eval/equi/r2_agg/rotation": 0.01 * i}
            metrics += [Metric(k, v, 0, step) for k, v in values.items() if method == "seq_jepa" or "agg" not in k]
        client.log_batch(run, metrics=metrics)
        client.set_terminated(run)
    runs = child_runs(mlflow_uri, parent)
    curves, floor = collect(runs, mlflow_uri)
    assert set(curves) == set(arms) and floor["rotation"] == [-0.05]
    assert curves["actions"]["rotation"] == pytest.approx({1200: 0.2, 2400: 0.4, 3600: 0.6})
    assert curves["vicreg"]["top1"] == {1200: 40.0, 2400: 41.0, 3600: 42.0}  # the encoder's: no aggregate
    assert curves["actions"]["top1"] == {1200: 50.0, 2400: 51.0, 3600: 52.0}  # z_AGG at M_val 6
    assert curves["vicreg"]["leakage"] == {}
    table = ratio_markdown(curves)
    assert table.splitlines()[0] == ("| step | rotation R² actions | rotation R² no_actions | rotation R² vicreg | "
                                     "actions / no actions | top-1 actions | top-1 no_actions | top-1 vicreg |")
    assert "| 1200 | 0.200 | 0.300 | 0.500 | 0.67x | 50.0 | 50.0 | 40.0 |" in table
    assert "| 3600 | 0.600 | 0.300 | 0.500 | 2.00x | 52.0 | 52.0 | 42.0 |" in table
    assert main(["--sweep", "long", "--experiment", "sweeps", "--tracking-uri", mlflow_uri,
                 "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "learning_curves.png").read_bytes()[:8] == PNG
    assert (tmp_path / "out" / "ratio_by_step.md").read_text() == table + "\n"


def test_runs_evaluated_once_draw_no_learning_curves(sweep_store, mlflow_uri, tmp_path):
    assert main(["--sweep", "grid", "--experiment", "sweeps", "--tracking-uri", mlflow_uri,
                 "--out", str(tmp_path / "out")]) == 0
    assert not (tmp_path / "out" / "learning_curves.png").exists()
