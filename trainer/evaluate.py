"""Offline evaluation of a trained seq-JEPA: probes on the frozen model, logged to its MLflow run (spec §4).

    python -m trainer.evaluate ~/seq-jepa/runs/NAME                   # a run folder (its latest checkpoint)
    python -m trainer.evaluate ~/seq-jepa/runs/NAME/checkpoint_...    # one checkpoint
    python -m trainer.evaluate s3://bucket/runs/NAME data.s3_endpoint_url=http://...   # the same in S3
    python -m trainer.evaluate ~/seq-jepa/runs/NAME eval.epochs=300 "eval.seq_lens=[1,2,4,8]"
    python -m trainer.evaluate --mlflow-run-id ID                     # the checkpoint of an MLflow run

The model is frozen in eval mode; its features are extracted once per split (train: the probes learn,
val: they are scored), kept under data.cache_dir/features (`--no-cache`: neither read nor written), and
every probe trains on them. Metrics, at the checkpoint's step:
  eval/inv/acc_agg/M{k}        linear probe on z_AGG of the first k views, for every k in eval.seq_lens
  eval/inv/acc_enc             linear probe on one encoder output (view 1)
  eval/equi/r2_enc[/g]         MLP regression of the relative action view 1 -> 2 from the encoder pair, per group g
  eval/equi/r2_agg[/g]         the same from the single-view z_AGGs of views 1 and 2 (leakage: should stay low)
  eval/equi/r2_abs/rotation    MLP regression of view 1's absolute rotation from its encoder output
  eval/path/r2[_no_vision]/M{k}  path integration and its no-vision control (trainer/path_integration.py)
Only `eval.*`, `data.*` and `tracking.*` keys can be overridden: everything else is the checkpoint's.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from tqdm import tqdm

from trainer import checkpoint as ckpt
from trainer import checkpoint_source as source
from trainer import feature_cache
from trainer.config import Config, config_from_dict, to_dict
from trainer.data import build_frozen_view_loader, s3_options
from trainer.features import SplitFeatures, extract_features
from trainer.offline_probes import fit_classifiers, fit_regressor
from trainer.path_integration import path_metrics
from trainer.precision import resolve_precision
from trainer.probes import summarise_r2
from trainer.redact import redact_text
from trainer.train_loop import build_model

OVERRIDABLE = ("eval", "data", "tracking")
SPLITS = ("train", "val")


def evaluate(config: Config, checkpoint: Path | str, device: torch.device | None = None) -> dict[str, float]:
    """Features of both splits (from the cache, or extracted from the frozen checkpoint), then every probe."""
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    s3 = s3_options(config)
    checkpoint = source.locate(checkpoint, s3)
    autocast = resolve_precision(config.train.precision, device)[0] == "bf16"
    limits = {"train": config.eval.train_samples, "val": config.eval.val_samples}
    entries, found = {}, {}
    if config.eval.feature_cache:
        identity = source.fingerprint(checkpoint, s3)
        for split in SPLITS:
            entries[split] = feature_cache.entry_path(config, identity, split, limits[split], autocast, device.type)
            if (cached := feature_cache.load(entries[split])) is not None:
                print(f"[seq-jepa eval] {split} features from the cache {entries[split]}", file=sys.stderr)
                found[split] = cached
    missing = [split for split in SPLITS if split not in found]
    if missing:
        found.update(_extract(config, checkpoint, missing, limits, device, autocast))
        for split in set(missing) & set(entries):
            feature_cache.save(entries[split], *found[split])
    (train, _), (val, info) = found["train"], found["val"]
    return fit_probes(train, val, info["num_classes"], info["action_groups"], config)


def _extract(config: Config, checkpoint: Path | str, splits: list[str], limits: dict, device: torch.device,
             autocast: bool) -> dict[str, tuple[SplitFeatures, dict]]:
    """Load the frozen model and run it over the given splits: {split: (features, info)}."""
    num_views = max(2, *config.eval.seq_lens) + 1  # the loader's last view is the (unused) prediction target
    loaders = {split: build_frozen_view_loader(config, split, num_views) for split in splits}
    first = next(iter(loaders.values()))
    model = build_model(config, first.action_dim, first.channels)
    with source.local_copy(checkpoint, s3_options(config)) as folder:
        ckpt.load_model_weights(folder, model)
    model.to(device)
    info = {"num_classes": first.num_classes, "action_groups": first.action_groups}
    return {split: (extract_features(model, loader, config.eval.seq_lens, limits[split], device, autocast,
                                     desc=f"features ({split})"), info) for split, loader in loaders.items()}


def fit_probes(train: SplitFeatures, val: SplitFeatures, num_classes: int, action_groups: dict[str, list[int]],
               config: Config) -> dict[str, float]:
    cfg = config.eval
    generator = torch.Generator().manual_seed(cfg.seed)
    rotation = action_groups.get("rotation")  # absolute rotation: only where the actions hold a varying one
    if rotation is not None and not (train.abs_action[:, rotation].std(0) > 0).any():
        rotation = None
    fits = 4 + (rotation is not None) + (train.z_path is not None)
    metrics = {}
    with tqdm(total=fits * cfg.epochs, desc="probes", unit="epoch") as bar:
        acc_agg = fit_classifiers(train.z_agg, train.label, val.z_agg, val.label, num_classes, cfg, generator, bar)
        metrics.update({f"eval/inv/acc_agg/M{m}": float(a) for m, a in zip(cfg.seq_lens, acc_agg)})
        acc_enc = fit_classifiers(train.z_enc[None, :, 0], train.label, val.z_enc[None, :, 0], val.label,
                                  num_classes, cfg, generator, bar)
        metrics["eval/inv/acc_enc"] = float(acc_enc[0])
        pairs = {"enc": lambda f: f.z_enc.flatten(1), "agg": lambda f: torch.cat([f.z_agg_view1, f.z_agg_view2], 1)}
        for key, pair in pairs.items():
            sse, total = fit_regressor(pair(train), train.action, pair(val), val.action, cfg, generator, bar)
            metrics.update(summarise_r2(sse, total, action_groups, f"eval/equi/r2_{key}"))
        if rotation is not None:
            sse, total = fit_regressor(train.z_enc[:, 0], train.abs_action[:, rotation], val.z_enc[:, 0],
                                       val.abs_action[:, rotation], cfg, generator, bar)
            metrics["eval/equi/r2_abs/rotation"] = summarise_r2(sse, total, {}, "r2")["r2"]
        metrics.update(path_metrics(train, val, cfg.seq_lens, action_groups, cfg, generator, bar))
    return metrics


def load_checkpoint_config(checkpoint: Path | str, overrides: list[str]) -> Config:
    """The checkpoint's (or run folder's latest checkpoint's) own config plus `eval.*`, `data.*`, `tracking.*`
    overrides (S3 options among them)."""
    s3 = _s3_of(overrides)
    state = source.read_state(source.locate(checkpoint, s3), s3)
    return config_from_dict(upgrade_stored_config(state["config"]), overrides, allowed_sections=OVERRIDABLE)


def upgrade_stored_config(tree: dict) -> dict:
    """A config saved by an older version: eval.max_seq_len = n became eval.seq_lens = [1..n]."""
    section = tree.get("eval", {})
    if "max_seq_len" in section:
        tree = {**tree, "eval": {k: v for k, v in section.items() if k != "max_seq_len"}}
        tree["eval"].setdefault("seq_lens", list(range(1, section["max_seq_len"] + 1)))
    return tree


def _s3_of(overrides: list[str]):
    """S3 options from the `data.s3_*` overrides (or the AWS environment): needed before the checkpoint's config."""
    return s3_options(config_from_dict({}, [o for o in overrides if o.strip().startswith("data.s3_")]))


def log_to_mlflow(config: Config, checkpoint: Path | str, metrics: dict[str, float]) -> str | None:
    """Metrics onto the training run (found by its run name), plus eval/results.json; the run id or None."""
    from trainer.tracking import MetricsLogger, find_run, resolve_tracking_uri

    uri = resolve_tracking_uri(config.tracking.tracking_uri)
    run_id = find_run(config, uri)
    if run_id is None:
        print(f"[seq-jepa eval] no MLflow run named '{config.run.name}' in {redact_text(uri)}; results not logged",
              file=sys.stderr)
        return None
    s3 = s3_options(config)
    checkpoint = source.locate(checkpoint, s3)
    logger = MetricsLogger(uri, run_id, enabled=True)
    logger.log_metrics(metrics, source.read_state(checkpoint, s3)["step"])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "results.json"
        path.write_text(json.dumps({"checkpoint": str(checkpoint), "eval": to_dict(config)["eval"],
                                    "metrics": metrics}, indent=2))
        logger.log_artifact(str(path), "eval")
    return run_id


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
    parser = argparse.ArgumentParser(description="Probe a trained seq-JEPA checkpoint (spec §4).",
                                     epilog="Overrides: dotted eval.*, data.* or tracking.* key=value pairs.")
    parser.add_argument("checkpoint", nargs="?",
                        help="a run folder (its latest checkpoint) or a checkpoint folder, local or s3://")
    parser.add_argument("--mlflow-run-id", help="evaluate the latest checkpoint of this MLflow training run")
    parser.add_argument("--tracking-uri", default="sqlite:///~/seq-jepa/mlflow.db",
                        help="where to find --mlflow-run-id (MLFLOW_TRACKING_URI wins)")
    parser.add_argument("--no-log", action="store_true", help="print the metrics only, log nothing to MLflow")
    parser.add_argument("--no-cache", action="store_true", help="extract features afresh; read and write no cache")
    args, overrides = parser.parse_known_args(argv)
    if args.checkpoint and re.match(r"^\w+(\.\w+)+=", args.checkpoint):  # an override argparse took for the location
        overrides, args.checkpoint = [args.checkpoint, *overrides], None
    if (args.checkpoint is None) == (args.mlflow_run_id is None):
        parser.error("give a checkpoint (or run folder) or --mlflow-run-id, not both")

    from data_pipeline import DataError
    from trainer.errors import ConfigError

    try:
        location = args.checkpoint
        if args.mlflow_run_id:
            location, run_s3 = checkpoint_of_mlflow_run(args.mlflow_run_id, args.tracking_uri)
            overrides = run_s3 + overrides  # the run's S3 options, unless given again
        overrides += ["eval.feature_cache=false"] if args.no_cache else []
        checkpoint = source.locate(location, _s3_of(overrides))
        config = load_checkpoint_config(checkpoint, overrides)
        start = time.perf_counter()
        metrics = evaluate(config, checkpoint)
    except (ConfigError, DataError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"[seq-jepa eval] {checkpoint} ({time.perf_counter() - start:.0f} s)")
    print_metrics(metrics)
    if not args.no_log:
        run_id = log_to_mlflow(config, checkpoint, metrics)
        if run_id:
            print(f"[seq-jepa eval] logged to MLflow run {run_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
