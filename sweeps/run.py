"""Run a Ray Tune sweep of seq-JEPA from a YAML file: one TorchTrainer and one MLflow child run per trial.

    python sweeps/run.py sweeps/smoke.yaml                          # a few minutes on 2 CPU cores
    python sweeps/run.py sweeps/seq_len_x_action_cond.yaml train.epochs=4 name=slac-long
    python sweeps/run.py sweeps/3diebench/seq_len.yaml             # the paper's recipe (GPUs)
    ray job submit --working-dir . -- python sweeps/run.py sweeps/action_cond.yaml

Overrides of training-config keys (`train.epochs=4`) apply to every trial; others set sweep keys
(`name=...`, `num_samples=3`, `scheduler.name=asha`). Running a sweep whose name already has a
folder under `storage_path` resumes it: finished trials stay, unfinished ones continue from their
checkpoints, and their MLflow runs continue too. At the end the report's figures are drawn
(`sweeps/report.py`) and attached to the sweep's parent run.
"""

from __future__ import annotations

import argparse
import sys


def tune_search_space(spec) -> dict:
    from ray import tune

    from sweeps.spec import VARIANT

    make = {"grid": tune.grid_search, "choice": tune.choice, "uniform": lambda v: tune.uniform(*v),
            "loguniform": lambda v: tune.loguniform(*v), "randint": lambda v: tune.randint(*v)}
    space = {VARIANT: tune.grid_search(list(spec.variants))} if spec.variants else {}
    return {**space, **{key: make[domain.kind](domain.values) for key, domain in spec.search_space.items()}}


def scheduler_of(spec):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    s = spec.scheduler
    if s.name == "asha":
        return ASHAScheduler(metric=spec.metric, mode=spec.mode, time_attr="training_iteration", max_t=s.max_t,
                             grace_period=s.grace_period, reduction_factor=s.reduction_factor)
    return FIFOScheduler()


def open_parent_run(spec, base_config, uri: str) -> tuple[str, bool]:
    """The sweep's MLflow parent run (continued when the sweep resumes), with the sweep file attached."""
    import yaml

    from trainer.tracking import ROLE_TAG, SWEEP_TAG, log_params, log_text, open_run

    run_id, resumed = open_run(uri, spec.experiment, spec.name, tags={SWEEP_TAG: spec.name, ROLE_TAG: "sweep",
                                                                      "dataset": base_config.data.dataset})
    if not resumed:
        log_params(uri, run_id, {"sweep.file": spec.source, "sweep.base_config": str(spec.base_config_path()),
                                 "sweep.scheduler": spec.scheduler.name, "sweep.num_samples": spec.num_samples,
                                 "sweep.metric": spec.metric, **{f"search.{k}": f"{d.kind} {d.values}"
                                                                 for k, d in spec.search_space.items()}})
        log_text(uri, run_id, "sweep.yaml", yaml.safe_dump(spec.to_dict(), sort_keys=False))
    return run_id, resumed


# A custom resource the sweep's local Ray instance holds max_concurrent_trials of, one per running trial. Tune's
# own limit gates new trials only: a restored sweep starts every trial it resumes at once, and on a small machine
# their drivers' CPUs then leave too few for any trial's workers (each waits, then fails to start).
TRIAL_SLOT = "seq_jepa_trial_slot"


def trial_resources(trial_cpus: float):
    """The resources of one trial's driver: its CPUs, and a trial slot where the Ray instance has them (a local
    instance the sweep started; a cluster joined has none, and its CPUs are assumed ample)."""
    import ray
    from ray import tune

    bundle = {"CPU": trial_cpus}
    if ray.cluster_resources().get(TRIAL_SLOT, 0) >= 1:
        bundle[TRIAL_SLOT] = 1
    return tune.PlacementGroupFactory([bundle])


def build_tuner(spec, parent_run_id: str, uri: str):
    """A new Tuner, or the sweep's own one restored from its folder (resuming unfinished trials)."""
    from ray import tune

    from sweeps.trial import run_trial

    trainable = tune.with_resources(
        tune.with_parameters(run_trial, spec=spec, parent_run_id=parent_run_id, tracking_uri=uri),
        trial_resources(spec.resources.trial_cpus))
    if tune.Tuner.can_restore(str(spec.folder)):
        print(f"[seq-jepa sweep] resuming '{spec.name}' from {spec.folder}")
        return tune.Tuner.restore(str(spec.folder), trainable, resume_unfinished=True, resume_errored=True)
    return tune.Tuner(
        trainable, param_space=tune_search_space(spec),
        tune_config=tune.TuneConfig(num_samples=spec.num_samples, max_concurrent_trials=spec.max_concurrent_trials,
                                    scheduler=scheduler_of(spec)),
        run_config=tune.RunConfig(name=spec.name, storage_path=str(spec.folder.parent)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a Ray Tune sweep of seq-JEPA from a YAML file.",
                                     epilog="Overrides: training-config keys (train.epochs=4) apply to every "
                                            "trial; other keys set sweep keys (name=x, num_samples=2).")
    parser.add_argument("sweep", help="sweep YAML file (see sweeps/*.yaml)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides")
    parser.add_argument("--no-report", action="store_true", help="skip the figures at the end")
    args = parser.parse_args(argv)

    from trainer.errors import exit_code_of

    return exit_code_of(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from sweeps.spec import load_sweep

    spec = load_sweep(args.sweep, args.overrides)  # the sweep and every trial's config, validated first

    import ray

    from sweeps import report
    from sweeps.runs import child_runs
    from sweeps.trial import trial_finished
    from trainer.config import load_config
    from trainer.launch import check_resources, connect_ray, ensure_dataset, resolve_paths
    from trainer.redact import redact_text
    from trainer.tracking import finish_run, resolve_tracking_uri

    base = resolve_paths(load_config(spec.base_config_path(), spec.fixed_overrides()))
    ensure_dataset(base)  # once, here: trials starting together must not race to write shards
    connect_ray(base, {TRIAL_SLOT: spec.max_concurrent_trials})
    check_resources(base, ray.cluster_resources().get("CPU", 0) - spec.resources.trial_cpus)

    uri = resolve_tracking_uri(base.tracking.tracking_uri)
    parent_run_id, resumed = open_parent_run(spec, base, uri)
    print(f"[seq-jepa sweep] '{spec.name}' ({'resumed' if resumed else 'new'}): MLflow parent run {parent_run_id} "
          f"in experiment '{spec.experiment}' at {redact_text(uri)}")
    try:
        results = build_tuner(spec, parent_run_id, uri).fit()
    except BaseException:
        finish_run(uri, parent_run_id, "FAILED")
        raise
    runs = child_runs(uri, parent_run_id)
    print(report.markdown_table(runs, list(spec.search_space)))
    # Interrupted (Ctrl-C, a lost driver): Tune saved its state and the same command resumes. A trial
    # whose last result does not say it finished was stopped midway, whatever status Tune gave it.
    unfinished = sum(1 for r in results if r.error is None and not trial_finished(r))
    for run in runs:  # a trial interrupted, or stopped early by the scheduler, never closed its run
        if run.status == "RUNNING":
            finish_run(uri, run.run_id, "KILLED")
    if unfinished:
        finish_run(uri, parent_run_id, "KILLED")
        print(f"[seq-jepa sweep] interrupted with {unfinished} of {len(results)} trials unfinished; run the same "
              "command again to resume", file=sys.stderr)
        return 130
    if not args.no_report and spec.evaluate.enabled:
        for path in report.make_report(runs, spec.folder / "report", uri, parent_run_id, list(spec.search_space)):
            if path.suffix == ".md":  # the methods' Table 1, the action-conditioning contrast
                print(f"\n{path.stem}:\n{path.read_text()}")
            print(f"[seq-jepa sweep] report: {path}")
    finish_run(uri, parent_run_id, "FAILED" if results.num_errors else "FINISHED")
    if results.num_errors:
        print(f"[seq-jepa sweep] {results.num_errors} of {len(results)} trials failed; the first error:\n"
              f"{results.errors[0]}", file=sys.stderr)
        return 1
    if uri.startswith("sqlite:///"):
        print(f"[seq-jepa sweep] compare the trials: mlflow ui --backend-store-uri {uri}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
