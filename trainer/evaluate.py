"""Offline evaluation of a trained seq-JEPA: probes on the frozen model, logged to its MLflow run (spec §4).

    python -m trainer.evaluate ~/seq-jepa/runs/NAME                   # a run folder (its latest checkpoint)
    python -m trainer.evaluate ~/seq-jepa/runs/NAME/checkpoint_...    # one checkpoint
    python -m trainer.evaluate ~/seq-jepa/runs/NAME eval.epochs=300 eval.max_seq_len=5
    python -m trainer.evaluate --mlflow-run-id ID                     # the checkpoint of an MLflow run

The model is frozen in eval mode; its features are extracted once per split (train: the probes learn,
val: they are scored) and every probe trains on the cached features. Metrics, at the checkpoint's step:
  eval/inv/acc_agg/M{k}  linear probe on z_AGG of the first k views, k = 1..eval.max_seq_len
  eval/inv/acc_enc       linear probe on one encoder output (view 1)
  eval/equi/r2_enc[/g]   MLP regression of the relative action view 1 -> 2 from the encoder pair, per group g
  eval/equi/r2_agg[/g]   the same from the single-view z_AGGs of views 1 and 2 (leakage: should stay low)
Only `eval.*`, `data.*` and `tracking.*` keys can be overridden: everything else is the checkpoint's.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from trainer import checkpoint as ckpt
from trainer.config import Config, config_from_dict, to_dict
from trainer.data import build_frozen_view_loader
from trainer.features import SplitFeatures, extract_features
from trainer.offline_probes import fit_classifiers, fit_regressor
from trainer.precision import resolve_precision
from trainer.probes import summarise_r2
from trainer.train_loop import build_model

OVERRIDABLE = ("eval", "data", "tracking")


def evaluate(config: Config, checkpoint: Path, device: torch.device | None = None) -> dict[str, float]:
    """Load the checkpoint's model, extract features of both splits, train and score every probe."""
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = config.eval
    num_views = max(2, cfg.max_seq_len) + 1  # the loader's last view is the (unused) prediction target
    loaders = {split: build_frozen_view_loader(config, split, num_views) for split in ("train", "val")}
    model = build_model(config, loaders["val"].action_dim, loaders["val"].channels)
    ckpt.load_model_weights(checkpoint, model)
    model.to(device)
    autocast = resolve_precision(config.train.precision, device)[0] == "bf16"
    limits = {"train": cfg.train_samples, "val": cfg.val_samples}
    features = {split: extract_features(model, loader, cfg.max_seq_len, limits[split], device, autocast,
                                        desc=f"features ({split})") for split, loader in loaders.items()}
    return fit_probes(features["train"], features["val"], loaders["val"].num_classes, loaders["val"].action_groups,
                      config)


def fit_probes(train: SplitFeatures, val: SplitFeatures, num_classes: int, action_groups: dict[str, list[int]],
               config: Config) -> dict[str, float]:
    cfg = config.eval
    generator = torch.Generator().manual_seed(cfg.seed)
    metrics = {}
    acc_agg = fit_classifiers(train.z_agg, train.label, val.z_agg, val.label, num_classes, cfg, generator)
    metrics.update({f"eval/inv/acc_agg/M{k + 1}": float(a) for k, a in enumerate(acc_agg)})
    acc_enc = fit_classifiers(train.z_enc[None, :, 0], train.label, val.z_enc[None, :, 0], val.label, num_classes,
                              cfg, generator)
    metrics["eval/inv/acc_enc"] = float(acc_enc[0])
    pairs = {"enc": lambda f: f.z_enc.flatten(1), "agg": lambda f: torch.cat([f.z_agg[0], f.z_agg_view2], dim=1)}
    for key, pair in pairs.items():
        sse, total = fit_regressor(pair(train), train.action, pair(val), val.action, cfg, generator)
        metrics.update(summarise_r2(sse, total, action_groups, f"eval/equi/r2_{key}"))
    return metrics


def load_checkpoint_config(checkpoint: Path, overrides: list[str]) -> Config:
    state = ckpt.read_trainer_state(checkpoint)
    return config_from_dict(state["config"], overrides, allowed_sections=OVERRIDABLE)


def log_to_mlflow(config: Config, checkpoint: Path, metrics: dict[str, float]) -> str | None:
    """Metrics onto the training run (found by its run name), plus eval/results.json; the run id or None."""
    from trainer.tracking import MetricsLogger, find_run, resolve_tracking_uri

    uri = resolve_tracking_uri(config.tracking.tracking_uri)
    run_id = find_run(config, uri)
    if run_id is None:
        print(f"[seq-jepa eval] no MLflow run named '{config.run.name}' in {uri}; results not logged", file=sys.stderr)
        return None
    logger = MetricsLogger(uri, run_id, enabled=True)
    logger.log_metrics(metrics, ckpt.read_trainer_state(checkpoint)["step"])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "results.json"
        path.write_text(json.dumps({"checkpoint": str(checkpoint), "eval": to_dict(config)["eval"],
                                    "metrics": metrics}, indent=2))
        logger.log_artifact(str(path), "eval")
    return run_id


def checkpoint_of_mlflow_run(run_id: str, tracking_uri: str) -> Path:
    """The latest checkpoint of an MLflow training run, from the storage path and name it logged."""
    from mlflow.tracking import MlflowClient

    from trainer.tracking import resolve_tracking_uri

    params = MlflowClient(resolve_tracking_uri(tracking_uri)).get_run(run_id).data.params
    if "run.storage_path" not in params or "run.name" not in params:
        raise FileNotFoundError(f"MLflow run {run_id} is not a seq-JEPA training run (no run.storage_path/run.name)")
    if "://" in params["run.storage_path"]:
        raise FileNotFoundError(f"MLflow run {run_id} stored its checkpoints at {params['run.storage_path']}; "
                                "copy the run folder locally and pass its path")
    return ckpt.latest_checkpoint(Path(params["run.storage_path"]) / params["run.name"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Probe a trained seq-JEPA checkpoint (spec §4).",
                                     epilog="Overrides: dotted eval.*, data.* or tracking.* key=value pairs.")
    parser.add_argument("checkpoint", nargs="?", help="a run folder (its latest checkpoint) or a checkpoint folder")
    parser.add_argument("--mlflow-run-id", help="evaluate the latest checkpoint of this MLflow training run")
    parser.add_argument("--tracking-uri", default="sqlite:///~/seq-jepa/mlflow.db",
                        help="where to find --mlflow-run-id (MLFLOW_TRACKING_URI wins)")
    parser.add_argument("--no-log", action="store_true", help="print the metrics only, log nothing to MLflow")
    args, overrides = parser.parse_known_args(argv)
    if (args.checkpoint is None) == (args.mlflow_run_id is None):
        parser.error("give a checkpoint (or run folder) or --mlflow-run-id, not both")

    from data_pipeline import DataError
    from trainer.errors import ConfigError

    try:
        if args.mlflow_run_id:
            checkpoint = checkpoint_of_mlflow_run(args.mlflow_run_id, args.tracking_uri)
        else:
            checkpoint = ckpt.latest_checkpoint(args.checkpoint)
        config = load_checkpoint_config(checkpoint, overrides)
        start = time.perf_counter()
        metrics = evaluate(config, checkpoint)
    except (ConfigError, DataError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"[seq-jepa eval] {checkpoint} ({time.perf_counter() - start:.0f} s)")
    for key, value in metrics.items():
        print(f"  {key:<34} {value:8.3f}")
    if not args.no_log:
        run_id = log_to_mlflow(config, checkpoint, metrics)
        if run_id:
            print(f"[seq-jepa eval] logged to MLflow run {run_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
