"""Offline evaluation of a trained seq-JEPA: probes on the frozen model, logged to its MLflow run
(docs/paper-and-original-code.md#evaluation-protocol).

    python -m trainer.evaluate ~/seq-jepa/runs/NAME                   # a run folder (its latest checkpoint)
    python -m trainer.evaluate ~/seq-jepa/runs/NAME/checkpoint_...    # one checkpoint
    python -m trainer.evaluate s3://bucket/runs/NAME data.s3_endpoint_url=http://...   # the same in S3
    python -m trainer.evaluate ~/seq-jepa/runs/NAME eval.epochs=300 "eval.seq_lens=[1,2,4,8]"
    python -m trainer.evaluate --mlflow-run-id ID                     # the checkpoint of an MLflow run
    python -m trainer.evaluate ~/seq-jepa/runs/NAME --every-checkpoint  # each kept checkpoint: learning curves

The model is frozen in eval mode; its features are extracted once per split (train: the probes learn,
val: they are scored), kept under data.cache_dir/features (`--no-cache`: neither read nor written), and
every probe trains on them. Metrics, at the checkpoint's step:
  eval/inv/acc_agg/M{k}        linear probe on z_AGG of the first k views, for every k in eval.seq_lens
  eval/inv/acc_enc             linear probe on one encoder output (view 1)
  eval/equi/r2_enc[/g]         MLP regression of the relative action view 1 -> 2 from the encoder pair, per group g
  eval/equi/r2_agg[/g]         the same from the single-view z_AGGs of views 1 and 2 (leakage: should stay low)
  eval/equi/r2_abs/rotation    MLP regression of view 1's absolute rotation from its encoder output
  eval/path/r2[_no_vision]/M{k}  path integration and its no-vision control (evaluation/path_integration.py)
Only `eval.*`, `data.*` and `tracking.*` keys can be overridden: everything else is the checkpoint's.
--every-checkpoint evaluates each complete checkpoint of the run folder, oldest first, each logged at its own
step (keep them with train.keep_checkpoints); a checkpoint whose step already has these metrics in the MLflow run
is skipped, so the same command after more training evaluates only the new checkpoints.
"""

from __future__ import annotations

import argparse
import re
import sys
import time

from trainer.checkpointing import source
from trainer.evaluation.offline import (
    OVERRIDABLE,
    evaluate,
    evaluate_every_checkpoint,
    load_checkpoint_config,
    log_to_mlflow,
    s3_of_overrides,
)
from trainer.redact import redact_text

__all__ = ["OVERRIDABLE", "evaluate", "load_checkpoint_config", "log_to_mlflow", "main"]


def checkpoint_of_mlflow_run(run_id: str, tracking_uri: str) -> tuple[str, list[str]]:
    """The run folder of an MLflow training run (local or s3://), from the storage path and name it logged, and
    the S3 options it trained with as overrides."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from trainer.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    try:
        params = MlflowClient(uri).get_run(run_id).data.params
    except MlflowException as err:
        raise FileNotFoundError(f"no MLflow run {run_id} in {redact_text(uri)} ({err.error_code})") from None
    if "run.storage_path" not in params or "run.name" not in params:
        raise FileNotFoundError(f"MLflow run {run_id} is not a seq-JEPA training run (no run.storage_path/run.name)")
    s3 = [f"{key}={params[key]}" for key in ("data.s3_endpoint_url", "data.s3_region", "data.s3_profile")
          if params.get(key, "None") != "None"]
    return f"{params['run.storage_path'].rstrip('/')}/{params['run.name']}", s3


def print_metrics(metrics: dict[str, float]) -> None:
    """One line per metric, its per-group values (`name/group`) on the same line."""
    groups = {key for key in metrics if key.rsplit("/", 1)[0] in metrics}
    for key, value in metrics.items():
        if key not in groups:
            parts = [f"{k.rsplit('/', 1)[1]} {v:.3f}" for k, v in metrics.items() if k in groups and
                     k.rsplit("/", 1)[0] == key]
            print(f"  {key:<30} {value:8.3f}" + (f"   ({', '.join(parts)})" if parts else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Probe a trained seq-JEPA checkpoint "
                                                 "(docs/paper-and-original-code.md#evaluation-protocol).",
                                     epilog="Overrides: dotted eval.*, data.* or tracking.* key=value pairs.")
    parser.add_argument("checkpoint", nargs="?",
                        help="a run folder (its latest checkpoint) or a checkpoint folder, local or s3://")
    parser.add_argument("--mlflow-run-id", help="evaluate the latest checkpoint of this MLflow training run")
    parser.add_argument("--tracking-uri", default="sqlite:///~/seq-jepa/mlflow.db",
                        help="where to find --mlflow-run-id (MLFLOW_TRACKING_URI wins)")
    parser.add_argument("--no-log", action="store_true", help="print the metrics only, log nothing to MLflow")
    parser.add_argument("--no-cache", action="store_true", help="extract features afresh; read and write no cache")
    parser.add_argument("--every-checkpoint", action="store_true",
                        help="evaluate each kept checkpoint of the run at its step (skipping those already logged)")
    args, overrides = parser.parse_known_args(argv)
    if args.checkpoint and re.match(r"^\w+(\.\w+)+=", args.checkpoint):  # an override argparse took for the location
        overrides, args.checkpoint = [args.checkpoint, *overrides], None
    if (args.checkpoint is None) == (args.mlflow_run_id is None):
        parser.error("give a checkpoint (or run folder) or --mlflow-run-id, not both")

    from data_pipeline import DataError
    from trainer.errors import CheckpointError, ConfigError

    try:
        location = args.checkpoint
        if args.mlflow_run_id:
            location, run_s3 = checkpoint_of_mlflow_run(args.mlflow_run_id, args.tracking_uri)
            overrides = run_s3 + overrides  # the run's S3 options, unless given again
        overrides += ["eval.feature_cache=false"] if args.no_cache else []
        checkpoint = source.locate(location, s3_of_overrides(overrides))
        config = load_checkpoint_config(checkpoint, overrides)
        start = time.perf_counter()
        if args.every_checkpoint:
            return _every_checkpoint(config, location, log=not args.no_log)
        metrics = evaluate(config, checkpoint)
    except (ConfigError, DataError, CheckpointError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"[seq-jepa eval] {checkpoint} ({time.perf_counter() - start:.0f} s)")
    print_metrics(metrics)
    if not args.no_log:
        run_id = log_to_mlflow(config, checkpoint, metrics)
        if run_id:
            print(f"[seq-jepa eval] logged to MLflow run {run_id}")
    return 0


def _every_checkpoint(config, location: str, log: bool) -> int:
    results = evaluate_every_checkpoint(config, location, log=log)
    for checkpoint, step, metrics in results:
        if metrics is not None:
            print(f"[seq-jepa eval] {checkpoint} (step {step})")
            print_metrics(metrics)
    done = sum(metrics is not None for _, _, metrics in results)
    print(f"[seq-jepa eval] {done} of {len(results)} checkpoints evaluated"
          + (f", {len(results) - done} already in MLflow" if done < len(results) else "")
          + (" and logged" if log and done else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
