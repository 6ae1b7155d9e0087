"""Train seq-JEPA on Ray Train.

    python trainer/run.py                                   # the embedded default (Fashion-MNIST, local Ray)
    python trainer/run.py --config my.yaml model.seq_len=4  # a YAML file plus dotted overrides
    ray job submit --working-dir . -- python trainer/run.py run.name=exp1
    python trainer/run.py run.name=exp1                     # same name again: resume from its latest checkpoint

SIGTERM (a preemption notice, `ray job stop`) makes the workers write a checkpoint at their current
step; the command exits with code 143 and running it again resumes from that step.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# The project's one sys.path bootstrap: `python trainer/run.py` must run from a checkout that was not pip-installed.
# Every other entry point runs from an installed project (`pip install -e .`, the image), as a module from the
# repository root (`python -m trainer.evaluate`, `python -m infra.dry_run`), or under Ray's `--working-dir`, which
# puts the working directory on PYTHONPATH.
if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train seq-JEPA on Ray Train.",
                                     epilog="Overrides are dotted key=value pairs, e.g. model.seq_len=4 "
                                            "scaling.parallelism=ddp train.epochs=2")
    parser.add_argument("--config", help="YAML config file (default: trainer/configs/default.yaml)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from trainer.errors import exit_code_of

    return exit_code_of(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from trainer.config import load_config

    config = load_config(args.config, args.overrides)  # validated before anything starts

    import ray

    from trainer.launch import build_trainer, check_resources, check_storage, connect_ray, ensure_dataset, resolve_paths
    from trainer.redact import redact_text
    from trainer.tracking import finish_run, resolve_tracking_uri, start_or_resume_run
    from trainer.training.preemption import stop_on_sigterm

    config = resolve_paths(config)
    ensure_dataset(config)
    check_storage(config)  # before the MLflow run and Ray: a storage it cannot write is one line
    uri = resolve_tracking_uri(config.tracking.tracking_uri)
    run_id, resumed = start_or_resume_run(config, uri)  # an unreachable server fails here, before Ray starts
    connect_ray(config)
    check_resources(config, ray.cluster_resources().get("CPU", 0))
    print(f"[seq-jepa] run '{config.run.name}' ({'resumed' if resumed else 'new'}); MLflow run {run_id} at "
          f"{redact_text(uri)}")
    with stop_on_sigterm(config.run.stop_grace_s) as sigterm:
        trainer = build_trainer(config, {"tracking_uri": uri, "run_id": run_id}, stop_signal=sigterm.handle)
        try:
            result = sigterm.run(trainer.fit)
        except BaseException:
            finish_run(uri, run_id, "KILLED" if sigterm.received else "FAILED")
            raise
    if (result.metrics or {}).get("preempted"):
        finish_run(uri, run_id, "KILLED")
        print(f"[seq-jepa] stopped by SIGTERM: checkpoint at step {result.metrics.get('step')} in "
              f"{_location(config, result.checkpoint)}; run the same command (with run.name={config.run.name}) "
              "to resume")
        return 143  # 128 + SIGTERM, as the shell reports a process that SIGTERM ended
    finish_run(uri, run_id, "FINISHED")
    summary = {k: round(v, 4) for k, v in (result.metrics or {}).items() if isinstance(v, (int, float))}
    print(f"[seq-jepa] finished: {summary}")
    print(f"[seq-jepa] checkpoint: {_location(config, result.checkpoint)}")
    if result.checkpoint and "://" not in config.run.storage_path:
        run_dir = Path(config.run.storage_path) / config.run.name
        print(f"[seq-jepa] probe the frozen model (the paper's protocol): python -m trainer.evaluate {run_dir}")
    if uri.startswith("sqlite:///"):
        print(f"[seq-jepa] see the run: mlflow ui --backend-store-uri {uri}")
    return 0


def _location(config, checkpoint) -> str:
    """Where a checkpoint lives, as a user would type it (Ray gives `bucket/key` for s3:// storage)."""
    if checkpoint is None:
        return "none"
    scheme = config.run.storage_path.split("://")[0] if "://" in config.run.storage_path else None
    return f"{scheme}://{checkpoint.path}" if scheme and "://" not in checkpoint.path else checkpoint.path


if __name__ == "__main__":
    sys.exit(main())
