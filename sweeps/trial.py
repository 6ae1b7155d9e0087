"""One trial of a sweep, as Ray Tune runs it: train with a TorchTrainer, probe the frozen model, report.

The trial's Tune actor only orchestrates (it holds `resources.trial_cpus`, a sliver of a CPU): the
training runs in the TorchTrainer's own workers and the offline evaluation in a Ray task that gets
the trial's worker resources once training has released them.

Names are stable: the trial's training run is `<sweep>-<trial id>` both in the sweep's storage and
in MLflow, so a resumed sweep continues each trial's checkpoints and MLflow child run instead of
starting new ones.
"""

from __future__ import annotations

import ray
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from sweeps.spec import VARIANT, SweepSpec
from trainer.config import Config, config_from_dict, load_config, to_dict
from trainer.launch import build_trainer, ensure_dataset, resolve_paths
from trainer.tracking import PARAMS_TAG, PARENT_TAG, SWEEP_TAG, TRIAL_TAG, VARIANT_TAG, finish_run, start_or_resume_run

# In a trial's last Tune result. Tune's own `done` is not enough: it is added to the last result in
# place when the function returns, and an experiment snapshot taken between that result and the
# return keeps a cached copy without it, so a restored sweep can see a finished trial as unfinished.
FINISHED_KEY = "trial_finished"


def trial_finished(result) -> bool:
    """Whether a trial of a (possibly restored) ResultGrid ran to its end or was stopped by the scheduler."""
    return bool(result.metrics.get(FINISHED_KEY) or result.metrics.get("done"))


def trial_config(spec: SweepSpec, params: dict, trial_id: str, tracking_uri: str) -> Config:
    """The training config of one trial: base + resources + its sampled values + its stable name."""
    placement = [f"run.name={spec.name}-{trial_id}", f"run.storage_path={spec.folder / 'runs'}",
                 f"tracking.experiment={spec.experiment}", f"tracking.tracking_uri={tracking_uri}"]
    return resolve_paths(load_config(spec.base_config_path(), [*spec.trial_overrides(params), *placement]))


def describe(params: dict) -> str:
    return " ".join(f"{key.split('.')[-1]}={value}" for key, value in params.items())


@ray.remote
def evaluate_trial(config_tree: dict, overrides: list[str], threads: int, every_checkpoint: bool = False
                   ) -> dict[str, float]:
    """Offline probes on the trial's latest checkpoint (or on each kept one, skipping those evaluated before),
    logged to its MLflow run; the latest checkpoint's metrics."""
    import torch

    from trainer.evaluation.offline import OVERRIDABLE, evaluate, evaluate_every_checkpoint, log_to_mlflow
    from trainer.tracking import find_run, latest_metrics, resolve_tracking_uri

    torch.set_num_threads(threads)
    config = config_from_dict(config_tree, overrides, allowed_sections=OVERRIDABLE)
    run_folder = f"{config.run.storage_path}/{config.run.name}"  # its latest checkpoint, local or s3://
    if every_checkpoint:
        metrics = evaluate_every_checkpoint(config, run_folder)[-1][2]
        if metrics is None:  # the latest was evaluated by an earlier attempt of this trial: what that logged
            uri = resolve_tracking_uri(config.tracking.tracking_uri)
            metrics = latest_metrics(uri, find_run(config, uri), "eval/")
        return metrics
    metrics = evaluate(config, run_folder)
    log_to_mlflow(config, run_folder, metrics)
    return metrics


def run_trial(params: dict, spec: SweepSpec, parent_run_id: str, tracking_uri: str) -> None:
    """Tune's function trainable: the TorchTrainer reports each epoch to Tune, the evaluation once at the end."""
    trial_id = tune.get_context().get_trial_id()
    config = trial_config(spec, params, trial_id, tracking_uri)
    ensure_dataset(config)  # cheap when the driver prepared it; needed when the search space moves data.*
    tags = {PARENT_TAG: parent_run_id, SWEEP_TAG: spec.name, TRIAL_TAG: trial_id, PARAMS_TAG: describe(params)}
    if VARIANT in params:
        tags[VARIANT_TAG] = params[VARIANT]
    run_id, _ = start_or_resume_run(config, tracking_uri, tags=tags)
    trainer = build_trainer(config, {"tracking_uri": tracking_uri, "run_id": run_id},
                            callbacks=[TuneReportCallback()])
    try:
        final = dict(trainer.fit().metrics or {})  # the last epoch's, unless the evaluation replaces them
        if spec.evaluate.enabled:
            s = config.scaling  # training has released these: the probes get the same share
            cpus = s.num_workers * s.cpus_per_worker
            # Outside the trial's placement group, which holds only the trial driver's sliver of a CPU.
            task = evaluate_trial.options(num_cpus=cpus, num_gpus=1 if s.use_gpu else 0,
                                          scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group=None))
            final = ray.get(task.remote(to_dict(config), spec.evaluate.overrides, max(1, int(cpus)),
                                        spec.evaluate.every_checkpoint))
        tune.report({**final, FINISHED_KEY: 1})
    except BaseException:
        finish_run(tracking_uri, run_id, "FAILED")
        raise
    finish_run(tracking_uri, run_id, "FINISHED")
