"""Driver side of a training job: resolve paths, prepare data, open the MLflow run, build the TorchTrainer.

`build_trainer` is what `trainer/run.py` runs and what a Ray Tune sweep launches once per trial.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

from data_pipeline import DataError, NotFound, S3Options, prepare_shards, read_manifest
from trainer.config import Config, to_dict
from trainer.data import resolve_shards, s3_options
from trainer.errors import CheckpointError, ConfigError, describe
from trainer.training.worker import train_worker


def resolve_paths(config: Config) -> Config:
    """Absolute paths and a run name, fixed on the driver: Ray workers run in another directory."""
    data = dataclasses.replace(config.data, shards=resolve_shards(config.data.shards),
                               cache_dir=str(Path(os.path.expanduser(config.data.cache_dir)).resolve()),
                               source_dir=(str(Path(os.path.expanduser(config.data.source_dir)).resolve())
                                           if config.data.source_dir else None))
    storage = config.run.storage_path
    if "://" not in storage:
        storage = str(Path(os.path.expanduser(storage)).resolve())
    name = config.run.name or f"{config.data.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
    return dataclasses.replace(config, data=data, run=dataclasses.replace(config.run, storage_path=storage, name=name))


def ensure_dataset(config: Config) -> None:
    """Shards exist and are readable before any worker starts (writing them first if allowed)."""
    s3, d = s3_options(config), config.data
    if d.prepare:
        # The first run's prepare step may fetch Fashion-MNIST with apt-get; it says so when it does.
        prepare_shards(d.dataset, d.shards, d.source_dir, d.cache_dir, d.samples_per_shard, s3=s3,
                       splits=(d.train_split, "val"), system_packages=True)
    for split in (d.train_split, "val"):
        try:
            manifest = read_manifest(f"{d.shards}/{split}", s3)
        except DataError as err:  # how to write shards helps only where there are none (not a denied read)
            fix = (f"; write shards with `python -m data_pipeline write {d.dataset} --out DIR` or set "
                   "data.prepare=true") if isinstance(err, NotFound) else ""
            raise DataError(f"{err} (data.shards={d.shards}{fix})") from None
        if manifest.dataset != d.dataset:
            raise DataError(f"data.dataset={d.dataset} but the shards at {d.shards}/{split} hold {manifest.dataset}; "
                            f"set data.dataset={manifest.dataset} or point data.shards at {d.dataset} shards")
        check_views(config, manifest.dataset_info.get("views_per_object"), f"{d.shards}/{split}",
                    config.model.seq_len if split == d.train_split else config.eval_seq_len)


def check_storage(config: Config) -> None:
    """run.storage_path takes writes, checked here as Ray Train's controller first checks it (it creates the run
    folder and a marker file there): a denial inside the controller's actor is a traceback, not one line."""
    storage = config.run.storage_path
    try:
        _ = RunConfig(name=config.run.name, storage_path=storage).storage_context  # the property does the writes
    except OSError as err:  # pyarrow: access denied, no such bucket, endpoint unreachable, a read-only folder
        s3 = storage.startswith("s3://")
        where = f" (endpoint {S3Options().describe_endpoint()})" if s3 else ""
        fix = "check AWS_ENDPOINT_URL and that the credentials may write there" if s3 else "check that it is writable"
        raise CheckpointError(f"cannot write the run's checkpoints to run.storage_path={storage}{where}: "
                              f"{describe(err)}; {fix}, or set another run.storage_path") from None


def check_views(config: Config, available: int | None, where: str, seq_len: int) -> None:
    """A sequence of M observed views plus the target needs M + 1 distinct views of each object."""
    if available is None or seq_len + 1 <= available:
        return
    key = "model.seq_len" if seq_len == config.model.seq_len else "model.eval_seq_len"
    raise ConfigError(f"{key}={seq_len} needs {seq_len + 1} views of each object (M observed + the target) but the "
                      f"{config.data.dataset} shards at {where} hold {available}; set {key} to at most {available - 1}")


def build_trainer(config: Config, tracking: dict | None = None, callbacks: list | None = None,
                  stop_signal=None) -> TorchTrainer:
    """A TorchTrainer for an already resolved config; `tracking` = {tracking_uri, run_id} for rank 0;
    `stop_signal`: a `trainer.training.preemption.StopSignal` that makes the workers checkpoint and return."""
    s = config.scaling
    scaling = ScalingConfig(num_workers=s.num_workers, use_gpu=s.use_gpu,
                            resources_per_worker={"CPU": s.cpus_per_worker, **({"GPU": 1} if s.use_gpu else {})})
    run = RunConfig(name=config.run.name, storage_path=config.run.storage_path,
                    checkpoint_config=CheckpointConfig(num_to_keep=config.train.keep_checkpoints),
                    failure_config=FailureConfig(max_failures=config.run.max_failures, controller_failure_limit=3),
                    callbacks=callbacks)
    loop_config = {"config": to_dict(config), "mlflow": tracking or {}, "stop_signal": stop_signal}
    return TorchTrainer(train_worker, train_loop_config=loop_config,
                        scaling_config=scaling, run_config=run,
                        torch_config=TorchConfig(backend="nccl" if s.use_gpu else "gloo"))


def connect_ray(config: Config, local_resources: dict[str, float] | None = None) -> None:
    """Join the cluster in `run.ray_address` / RAY_ADDRESS, or start a local instance (unless already up) with
    `local_resources` (custom resources, e.g. the sweep's trial slots) besides its CPUs."""
    import ray

    # Ray Train's default waits forever for workers a cluster cannot place; give up after 2 minutes.
    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "120")
    if ray.is_initialized():
        return
    joining = config.run.ray_address or os.environ.get("RAY_ADDRESS")
    # A local instance started here gets the project on its workers' path, installed or not.
    project_root = str(Path(__file__).resolve().parents[1])
    ray.init(address=config.run.ray_address, resources=None if joining else local_resources,
             runtime_env=None if joining else {"env_vars": {"PYTHONPATH": project_root}})


def check_resources(config: Config, cluster_cpus: float) -> None:
    needed = config.scaling.num_workers * config.scaling.cpus_per_worker
    if needed > cluster_cpus:
        raise ConfigError(f"scaling asks for {config.scaling.num_workers} workers x {config.scaling.cpus_per_worker} "
                          f"CPUs = {needed:g} CPUs but the Ray cluster has {cluster_cpus:g}; lower scaling.num_workers "
                          "or scaling.cpus_per_worker")
