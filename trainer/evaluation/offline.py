"""Offline evaluation of a trained seq-JEPA: probes on the frozen model, logged to its MLflow run
(docs/paper-and-original-code.md#evaluation-protocol).

The model is frozen in eval mode; its features are extracted once per split (train: the probes learn,
val: they are scored), kept under data.cache_dir/features (unless eval.feature_cache=false), and every
probe trains on them. The metrics and their meaning: `trainer/evaluate.py`, the command line.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch
from tqdm import tqdm

from trainer.checkpointing import source
from trainer.checkpointing.dcp import load_model_weights
from trainer.config import Config, config_from_dict, to_dict
from trainer.data import build_frozen_view_loader, s3_options
from trainer.evaluation import feature_cache
from trainer.evaluation.features import SplitFeatures, extract_features
from trainer.evaluation.path_integration import path_metrics
from trainer.evaluation.probes import fit_classifiers, fit_regressor
from trainer.methods.build import build_model
from trainer.methods.catalog import method_entry
from trainer.metric_names import EVAL_ACC_ENC
from trainer.redact import redact_text
from trainer.stats import effective_rank, summarise_r2
from trainer.training.precision import resolve_precision

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
    observed = max(2, *config.eval.seq_lens) if method_entry(config.model.method).aggregate else 2
    num_views = observed + 1  # the loader's last view is the (unused) prediction target
    loaders = {split: build_frozen_view_loader(config, split, num_views) for split in splits}
    first = next(iter(loaders.values()))
    model = build_model(config, first.action_dim, first.channels)
    with source.local_copy(checkpoint, s3_options(config)) as folder:
        load_model_weights(folder, model)
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
    aggregate = train.z_agg is not None  # seq-JEPA; the baselines are probed on their encoder only (Table 1)
    fits = 2 + 2 * aggregate + (rotation is not None) + (train.z_path is not None)
    metrics = {"eval/eff_rank_enc": effective_rank(val.z_enc[:, 0])}
    with tqdm(total=fits * cfg.epochs, desc="probes", unit="epoch") as bar:
        if aggregate:
            acc_agg = fit_classifiers(train.z_agg, train.label, val.z_agg, val.label, num_classes, cfg, generator,
                                      bar)
            metrics.update({f"eval/inv/acc_agg/M{m}": float(a) for m, a in zip(cfg.seq_lens, acc_agg)})
        acc_enc = fit_classifiers(train.z_enc[None, :, 0], train.label, val.z_enc[None, :, 0], val.label,
                                  num_classes, cfg, generator, bar)
        metrics[EVAL_ACC_ENC] = float(acc_enc[0])
        pairs = {"enc": lambda f: f.z_enc.flatten(1)}
        if aggregate:
            pairs["agg"] = lambda f: torch.cat([f.z_agg_view1, f.z_agg_view2], 1)
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
    s3 = s3_of_overrides(overrides)
    state = source.read_state(source.locate(checkpoint, s3), s3)
    return config_from_dict(state["config"], overrides, allowed_sections=OVERRIDABLE)


def s3_of_overrides(overrides: list[str]):
    """S3 options from the `data.s3_*` overrides (or the AWS environment): needed before the checkpoint's config."""
    return s3_options(config_from_dict({}, [o for o in overrides if o.strip().startswith("data.s3_")]))


def evaluate_every_checkpoint(config: Config, run_folder: Path | str, log: bool = True
                              ) -> list[tuple[str, int, dict[str, float] | None]]:
    """Each complete checkpoint of the run, oldest first, evaluated and logged to the run at its step, so MLflow
    draws every metric against training steps. A checkpoint whose step already has offline metrics in the run is
    skipped (None), so a rerun evaluates only new checkpoints. (checkpoint, step, metrics) per checkpoint."""
    s3 = s3_options(config)
    done = evaluated_steps(config) if log else set()
    results = []
    for checkpoint in source.checkpoints(run_folder, s3):
        step = source.read_state(checkpoint, s3)["step"]
        if step in done:
            print(f"[seq-jepa eval] step {step}: evaluated already ({checkpoint}), skipped", file=sys.stderr)
            results.append((str(checkpoint), step, None))
            continue
        metrics = evaluate(config, checkpoint)
        if log:
            log_to_mlflow(config, checkpoint, metrics)
        results.append((str(checkpoint), step, metrics))
    return results


def evaluated_steps(config: Config) -> set[int]:
    """The steps at which the run's MLflow run holds offline-evaluation metrics (none: no such run)."""
    from trainer.tracking import find_run, metric_steps, resolve_tracking_uri

    uri = resolve_tracking_uri(config.tracking.tracking_uri)
    run_id = find_run(config, uri)
    return set() if run_id is None else metric_steps(uri, run_id, EVAL_ACC_ENC)


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
