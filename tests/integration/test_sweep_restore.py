"""A restored sweep tells its finished trials from its interrupted ones.

Tune marks a function trainable's last result `done` in place when the function returns; an
experiment snapshot taken between the last report and the return keeps a copy without it, so a
restored sweep could take a finished trial for an interrupted one and exit 130 forever. Snapshots
are forced on every loop here, and a trial lingers after its last report, as `run_trial` does while
it closes its MLflow run, until the experiment's snapshot in its storage holds that report.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from sweeps.trial import FINISHED_KEY, trial_finished

pytestmark = pytest.mark.integration


def test_restored_results_count_trials_that_reported_their_end_as_finished(ray_local, tmp_path, monkeypatch):
    from ray import tune

    def snapshot_holds(folder: Path, trial_id: str, iteration: int) -> bool:
        """Whether the experiment's newest snapshot (`experiment_state-<time>.json`) has the trial at `iteration`."""
        snapshots = sorted(folder.glob("experiment_state-*.json"))
        try:
            trials = json.loads(snapshots[-1].read_text())["trial_data"] if snapshots else []
        except (OSError, ValueError):  # being written or copied: read it on the next try
            return False
        for _, run_metadata in trials:
            last = json.loads(run_metadata).get("last_result") or {}
            if last.get("trial_id") == trial_id and last.get("training_iteration", 0) >= iteration:
                return True
        return False

    def reports_then_lingers(config):  # defined here so that Ray ships it by value to its workers
        tune.report({"epoch": 0})
        if config["finishes"]:
            tune.report({"epoch": 1, FINISHED_KEY: 1})
        # Linger until a snapshot taken after the last report is in the storage, as the restore will read it.
        trial_id, iteration = tune.get_context().get_trial_id(), 2 if config["finishes"] else 1
        deadline = time.monotonic() + 120
        while not snapshot_holds(Path(config["folder"]), trial_id, iteration):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no snapshot of trial {trial_id} after its report {iteration} in 120 s")
            time.sleep(0.05)
        if not config["finishes"]:
            raise InterruptedError("stands in for a trial that never reached its end")

    monkeypatch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "0")  # a snapshot on every loop of the controller
    run_config = tune.RunConfig(name="linger", storage_path=str(tmp_path), verbose=0)
    space = {"finishes": tune.grid_search([True, False]), "folder": str(tmp_path / "linger")}
    first = tune.Tuner(reports_then_lingers, param_space=space, run_config=run_config).fit()
    restored = tune.Tuner.restore(str(tmp_path / "linger"), reports_then_lingers).fit()

    for results in (first, restored):
        by_config = {r.config["finishes"]: r for r in results}
        assert trial_finished(by_config[True]) and by_config[True].error is None  # None: it saw its snapshot
        assert by_config[False].error is not None and not trial_finished(by_config[False])


def test_a_restored_sweep_runs_the_trials_it_resumes_one_slot_at_a_time(ray_local, tmp_path):
    """Tune's max_concurrent_trials gates new trials only: restored, every errored trial starts at once (on 2
    CPUs their drivers then starve every trial's workers). The sweep's trial slot keeps them one at a time."""
    from ray import tune

    from sweeps.run import trial_resources

    def fails_once_then_takes_a_second(config):
        folder, i = Path(config["folder"]), config["i"]
        if not (folder / f"{i}.failed").exists():
            (folder / f"{i}.failed").touch()
            raise RuntimeError("the first attempt fails, as a trial of an interrupted sweep")
        start = time.time()
        time.sleep(1)
        (folder / f"{i}.span").write_text(f"{start} {time.time()}")
        tune.report({"epoch": 0})

    trainable = tune.with_resources(fails_once_then_takes_a_second, trial_resources(0.1))
    space = {"i": tune.grid_search([0, 1, 2]), "folder": str(tmp_path)}
    tune.Tuner(trainable, param_space=space, tune_config=tune.TuneConfig(max_concurrent_trials=1),
               run_config=tune.RunConfig(name="slots", storage_path=str(tmp_path), verbose=0)).fit()
    restored = tune.Tuner.restore(str(tmp_path / "slots"), trainable, resume_errored=True).fit()

    assert not restored.errors
    spans = sorted(tuple(map(float, p.read_text().split())) for p in tmp_path.glob("*.span"))
    assert len(spans) == 3
    assert all(later[0] >= earlier[1] for earlier, later in zip(spans, spans[1:])), spans  # never two at once
