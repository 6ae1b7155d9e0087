"""One typed configuration schema for a training run.

Every value a user can set lives here with its default and a one-line comment. Defaults follow the
paper's published recipe (spec §3); `trainer/configs/default.yaml` scales it down to the embedded
Fashion-MNIST default that trains in minutes on a laptop CPU.

A config is built from a YAML file plus dotted `key=value` overrides, then validated before any Ray
worker starts. Unknown keys, wrong types and impossible values raise `ConfigError` naming the key.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

from trainer.errors import ConfigError


@dataclass
class DataConfig:
    # fashion-mnist (the embedded default, fetched and written on first use) or a paper dataset whose shards
    # `python -m data_pipeline write DATASET` wrote (or that data.source_dir lets the run write itself)
    dataset: Literal["fashion-mnist", "cifar100", "tinyimagenet", "3diebench", "stl10", "imagenet"] = "fashion-mnist"
    shards: str = "~/seq-jepa/data/shards/fashion-mnist"  # folder, file:// or s3://bucket/prefix holding train/ and val/
    # Object storage: credentials always come from the AWS chain (env, ~/.aws, instance role), never from here.
    s3_endpoint_url: Optional[str] = None  # S3-compatible endpoint (MinIO, R2, ...); None: AWS_ENDPOINT_URL or AWS
    s3_region: Optional[str] = None  # None: AWS_REGION / the profile's region
    s3_profile: Optional[str] = None  # None: AWS_PROFILE / the default chain
    prepare: bool = True  # write the shards from the raw dataset first if they are missing
    train_shards: Optional[str] = None  # brace pattern of the train set's shards to read, e.g.
    # shard-{000000..000099}.tar (a subset); None: all
    train_split: str = "train"  # the shard set seq-JEPA trains on (stl10: `unlabeled`); probes use train and val
    source_dir: Optional[str] = None  # the raw dataset's folder; fashion-mnist: None = cache, Debian package, HTTP
    cache_dir: str = "~/seq-jepa/data/cache"  # where fetched raw files are kept
    samples_per_shard: int = 2000  # shard size when preparing shards
    image_size: Optional[int] = None  # side of the views (fashion-mnist, cifar100, tinyimagenet); None: natural size
    batch_size: int = 256  # GLOBAL batch (sequences per optimizer step), split evenly across workers
    loader_workers: int = 1  # DataLoader worker processes per training worker
    shuffle_buffer: int = 2000  # samples held for shuffling inside each loader worker
    resample: bool = False  # draw train shards with replacement, train.steps_per_epoch batches per epoch on
    # every rank (any number of nodes or shards); false: one pass, shards split among ranks and workers
    val_batch_size: int = 512  # global batch for validation passes
    # Ranges of the parameterized transformations whose parameters are the actions.
    rotation_deg: float = 90.0  # rotation ~ U(-r, r) degrees
    scale_min: float = 0.75  # scale ~ log-uniform(min, max)
    scale_max: float = 1.25
    translate: float = 0.15  # shift ~ U(-t, t), fraction of the image side
    brightness: float = 0.3  # additive brightness ~ U(-b, b)
    contrast: float = 0.3  # contrast factor ~ log-uniform(1-c, 1+c)
    # Load-time options of the paper's datasets (spec §1.4, §2); each applies to its dataset only.
    latent_type: Literal["rot", "rotcolor", "color", "all"] = "rot"  # 3diebench: what the actions hold
    canonical_quaternions: bool = True  # 3diebench: every quaternion with w >= 0; false: the original's signs
    blur: bool = True  # cifar100/tinyimagenet: blur and its sigma action; false: the original's --no-blur
    legacy_action_norm: bool = False  # cifar100/tinyimagenet: the original's L2 norm across views (spec §7.C6)
    fovea_size: int = 32  # stl10/imagenet: side of a glimpse, pixels
    use_saliency: bool = True  # stl10/imagenet: fixations drawn from the saliency map, else uniformly
    inhibition_of_return: bool = True  # stl10/imagenet: no fixation inside an earlier glimpse's square
    legacy_patch_transpose: bool = False  # stl10/imagenet: the original's transposed foveae (spec §7.C1)
    crop_size: Optional[int] = None  # imagenet: RandomResizedCrop side before the glimpses; None: centre square


@dataclass
class ModelConfig:
    encoder: Literal["resnet18", "convnet"] = "resnet18"  # convnet: a small 4-block CNN for CPU runs
    cifar_stem: bool = False  # ResNet-18 with 3x3/1 stem and no max-pool (small images)
    conv_width: int = 32  # convnet width of the first block (output dim = 8 x width)
    seq_len: int = 3  # M: observed views per training sequence (M+1 views are loaded)
    eval_seq_len: Optional[int] = None  # M used for validation/probes; None: same as seq_len
    action_cond: bool = True  # condition tokens and predictor on actions (off: the no-action model of Table 1)
    learn_action_embedding: bool = True  # learned Linear->BN action embedding; off: raw actions, zero-padded
    action_proj_dim: int = 128  # P, width of the action embedding
    num_heads: int = 4  # aggregator attention heads
    num_layers: int = 3  # aggregator transformer layers
    mlp_ratio: float = 4.0  # aggregator feed-forward width / token width
    dropout: float = 0.1  # aggregator dropout (PyTorch default, as in the paper's code)
    pred_hidden: int = 1024  # predictor hidden width (<= 0: a single linear layer)


@dataclass
class EmaConfig:
    enabled: bool = True  # EMA target encoder; off: the online encoder, detached
    decay: float = 0.996  # starting decay tau_0
    schedule: Literal["cosine", "constant"] = "cosine"  # cosine: tau goes from decay to 1 over training


@dataclass
class OptimConfig:
    name: Literal["adamw", "adam"] = "adamw"  # the paper's code effectively used adam with weight_decay 0 (spec §3.2)
    lr: float = 4e-4  # peak learning rate
    weight_decay: float = 1e-3  # on weights (ndim >= 2) only; biases and norms get 0
    warmup_epochs: float = 20.0  # linear warm-up from start_lr, per step
    start_lr: float = 1e-5
    final_lr: float = 1e-5  # end of the cosine decay
    schedule: Literal["cosine", "legacy_constant"] = "cosine"  # legacy_constant: the official code's effective schedule
    grad_clip: Optional[float] = None  # max global gradient norm; None: no clipping


@dataclass
class ProbeConfig:
    lr: float = 1e-3  # Adam learning rate of the online probes (their own optimizer)
    hidden: int = 1024  # width of the MLP regressor on encoder pairs (rotation is bilinear in a pair)
    val_batches: Optional[int] = None  # cap on validation batches per rank; None: the whole split


@dataclass
class EvalConfig:
    """Offline evaluation (`python -m trainer.evaluate`): probes on the frozen model (spec §4)."""

    # Inference lengths M_val: one z_AGG classifier and one path-integration probe per entry, each its own probe.
    seq_lens: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5, 6, 7, 8])
    train_samples: Optional[int] = None  # train-split sequences the probes learn from; None: the whole split
    val_samples: Optional[int] = None  # val-split sequences they are scored on; None: the whole split
    epochs: int = 100  # passes over the cached features (spec §4.4 recommends 300 at paper scale)
    lr: float = 1e-3  # Adam, no weight decay (spec §4.4)
    batch_size: int = 256
    hidden: int = 1024  # width of the MLP regressor of the relative action (spec §3.6)
    seed: int = 0  # probe initialisation and minibatch order
    feature_cache: bool = True  # keep extracted features under data.cache_dir/features and reuse them


@dataclass
class TrainConfig:
    epochs: int = 1000
    steps_per_epoch: Optional[int] = None  # cap on steps per epoch; None: one pass over the shards
    seed: int = 42
    precision: Literal["fp32", "bf16", "auto"] = "fp32"  # bf16: autocast, BatchNorm and the loss stay fp32;
    # auto: bf16 where the worker's CPU/GPU has it natively (trainer/precision.py), else fp32
    channels_last: bool = False  # NHWC activations: faster convolutions with oneDNN and on GPUs
    log_every_steps: int = 20  # per-step metrics cadence (every report is a barrier across workers)
    eval_every_epochs: int = 1  # validation + probe metrics cadence
    checkpoint_every_epochs: int = 1  # checkpoint cadence (the last epoch is always checkpointed)
    checkpoint_every_steps: Optional[int] = None  # also checkpoint mid-epoch every N steps (a resume continues
    # from the exact batch: RNG states and the loaders' positions are saved too)
    sample_log: Optional[str] = None  # folder: each rank appends the sample keys of every step it trains to
    # rank<r>.jsonl (the soak test checks from it that a kill-and-resume loses and repeats no sample)
    keep_checkpoints: int = 2  # checkpoints kept in the run's storage


@dataclass
class ScalingConfig:
    num_workers: int = 2  # Ray Train workers
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    parallelism: Literal["fsdp2", "ddp"] = "fsdp2"
    torch_threads: Optional[int] = None  # intra-op threads per worker; None: cpus_per_worker


@dataclass
class RunConfig:
    name: Optional[str] = None  # run name; reusing a name resumes that run from its latest checkpoint
    storage_path: str = "~/seq-jepa/runs"  # where Ray Train keeps checkpoints (local path or s3://)
    ray_address: Optional[str] = None  # None: join the cluster in RAY_ADDRESS or start a local instance
    max_failures: int = 0  # worker-group restarts from the latest checkpoint before giving up
    stop_grace_s: float = 120.0  # on SIGTERM (preemption notice) to the driver: time the workers get to write
    # a checkpoint at their current step before the driver gives up on them


@dataclass
class FaultsConfig:
    """Fault injection, for testing that a run survives failures (never set in a real run)."""

    exit_at_step: Optional[int] = None  # one worker process exits abruptly after this step (as if OOM-killed),
    # only in a run that did not start from a checkpoint, so a restored group goes on
    exit_rank: Optional[int] = None  # which rank exits; None: the last one


@dataclass
class TrackingConfig:
    tracking_uri: str = "sqlite:///~/seq-jepa/mlflow.db"  # MLFLOW_TRACKING_URI wins when set
    experiment: str = "seq-jepa"
    log_model: bool = True  # final encoder weights as an artifact


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    ema: EmaConfig = field(default_factory=EmaConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    run: RunConfig = field(default_factory=RunConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    faults: FaultsConfig = field(default_factory=FaultsConfig)

    @property
    def eval_seq_len(self) -> int:
        return self.model.eval_seq_len or self.model.seq_len


DEFAULT_CONFIG_PATH = Path(__file__).parent / "configs" / "default.yaml"


# ---------------------------------------------------------------------------------------------
# Building a Config from nested dicts, with type checks that name the key.


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(_type_name(a) for a in args) + " or null"
    if origin is list:
        return "a list of " + _type_name(typing.get_args(tp)[0]) + " (e.g. [1, 2, 4])"
    return getattr(tp, "__name__", str(tp))


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check `value` against the annotation `tp`; ints are accepted where floats are expected."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(key, value, arg)
            except ConfigError:
                pass
        raise ConfigError(f"{key} must be {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{key} must be {_type_name(tp)}, got {value!r}")
        return value
    if origin is list:
        if isinstance(value, list):
            (item,) = typing.get_args(tp)
            return [_coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
        raise ConfigError(f"{key} must be {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads `1e-3` (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                number = math.nan
            if math.isfinite(number):
                return number
    elif tp is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"{key} must be {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def _unknown_key_error(key: str, section_cls: type, prefix: str) -> ConfigError:
    names = [f.name for f in dataclasses.fields(section_cls)]
    close = difflib.get_close_matches(key, names, n=1)
    hint = f"; did you mean '{prefix}{close[0]}'?" if close else ""
    return ConfigError(f"unknown config key '{prefix}{key}'{hint} (allowed in '{prefix.rstrip('.') or 'top level'}': {', '.join(names)})")


def _build(cls: type, values: dict, prefix: str = ""):
    if not isinstance(values, dict):
        raise ConfigError(f"'{prefix.rstrip('.')}' must be a mapping of keys, got {values!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in known:
            raise _unknown_key_error(str(key), cls, prefix)
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value or {}, f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(f"{prefix}{key}", value, tp)
    return cls(**kwargs)


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form key=value (e.g. model.seq_len=4)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def set_nested(tree: dict, path: list[str], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set '{'.'.join(path)}': '{part}' is a value, not a section")
        node = child
    node[path[-1]] = value


def read_yaml_mapping(path: Path, kind: str = "config file", holds: str = "a mapping of sections") -> dict:
    """A YAML file that must hold a mapping; a missing or malformed file is one ConfigError naming `kind`."""
    if not path.is_file():
        raise ConfigError(f"{kind} not found: {path}")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{kind} {path} is not valid YAML: {err}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{kind} {path} must hold {holds}, got {type(tree).__name__}")
    return tree


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """YAML file (default: the embedded default) + dotted overrides -> validated Config."""
    return config_from_dict(read_yaml_mapping(Path(path) if path else DEFAULT_CONFIG_PATH), overrides)


def config_from_dict(tree: dict, overrides: list[str] = (), allowed_sections: tuple[str, ...] | None = None) -> Config:
    """Rebuild a Config from `to_dict` output (a checkpoint, a worker's config), plus dotted overrides.

    `allowed_sections` limits which sections the overrides may touch (e.g. what a finished
    checkpoint's evaluation may change without contradicting the trained model).
    """
    tree = copy.deepcopy(tree)
    for text in overrides:
        key_path, value = _parse_override(text)
        if allowed_sections is not None and key_path[0] not in allowed_sections:
            raise ConfigError(f"cannot override '{'.'.join(key_path)}' here; only "
                              f"{', '.join(s + '.*' for s in allowed_sections)} keys can be set")
        set_nested(tree, key_path, value)
    config = _build(Config, tree)
    validate(config)
    return config


def to_dict(config: Config) -> dict:
    return dataclasses.asdict(config)


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{'model': {'seq_len': 3}} -> {'model.seq_len': 3}: the MLflow params."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# ---------------------------------------------------------------------------------------------
# Value checks that types alone cannot express.


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def validate(c: Config) -> None:
    _require(c.model.seq_len >= 1, f"model.seq_len (M) must be >= 1, got {c.model.seq_len}")
    _require(c.model.eval_seq_len is None or c.model.eval_seq_len >= 1,
             f"model.eval_seq_len must be >= 1 or null, got {c.model.eval_seq_len}")
    _require(c.model.num_heads >= 1 and c.model.num_layers >= 1,
             "model.num_heads and model.num_layers must be >= 1")
    _require(0.0 <= c.model.dropout < 1.0, f"model.dropout must be in [0, 1), got {c.model.dropout}")
    _require(c.model.action_proj_dim >= 1, "model.action_proj_dim must be >= 1")
    _require(c.model.conv_width >= 1, "model.conv_width must be >= 1")
    _require(0.0 <= c.ema.decay <= 1.0, f"ema.decay must be in [0, 1], got {c.ema.decay}")
    _require(c.optim.lr >= 0 and c.optim.start_lr >= 0 and c.optim.final_lr >= 0,
             "optim.lr, optim.start_lr and optim.final_lr must be >= 0")
    _require(c.optim.warmup_epochs >= 0, "optim.warmup_epochs must be >= 0")
    _require(c.optim.grad_clip is None or c.optim.grad_clip > 0, "optim.grad_clip must be > 0 or null")
    _require(c.train.epochs >= 1, f"train.epochs must be >= 1, got {c.train.epochs}")
    _require(c.train.steps_per_epoch is None or c.train.steps_per_epoch >= 1,
             "train.steps_per_epoch must be >= 1 or null")
    for key in ("log_every_steps", "eval_every_epochs", "checkpoint_every_epochs", "keep_checkpoints"):
        _require(getattr(c.train, key) >= 1, f"train.{key} must be >= 1, got {getattr(c.train, key)}")
    _require(c.train.checkpoint_every_steps is None or c.train.checkpoint_every_steps >= 1,
             f"train.checkpoint_every_steps must be >= 1 or null, got {c.train.checkpoint_every_steps}")
    _require(c.run.max_failures >= -1, f"run.max_failures must be >= 0 (or -1: retry forever), got "
                                       f"{c.run.max_failures}")
    _require(c.run.stop_grace_s >= 0, f"run.stop_grace_s must be >= 0, got {c.run.stop_grace_s}")
    _require(c.faults.exit_at_step is None or c.faults.exit_at_step >= 1, "faults.exit_at_step must be >= 1 or null")
    _require(c.faults.exit_rank is None or 0 <= c.faults.exit_rank < c.scaling.num_workers,
             f"faults.exit_rank must name a rank below scaling.num_workers={c.scaling.num_workers}, got "
             f"{c.faults.exit_rank}")
    _require(c.scaling.num_workers >= 1, f"scaling.num_workers must be >= 1, got {c.scaling.num_workers}")
    _require(c.scaling.cpus_per_worker > 0, "scaling.cpus_per_worker must be > 0")
    _require(c.scaling.torch_threads is None or c.scaling.torch_threads >= 1, "scaling.torch_threads must be >= 1")
    _require(c.data.image_size is None or c.data.image_size >= 8, f"data.image_size must be >= 8 or null, got "
                                                                    f"{c.data.image_size}")
    _require(c.data.fovea_size >= 4, f"data.fovea_size must be >= 4, got {c.data.fovea_size}")
    _require(c.data.crop_size is None or c.data.crop_size >= c.data.fovea_size,
             f"data.crop_size must be >= data.fovea_size or null, got {c.data.crop_size}")
    _require(c.data.loader_workers >= 0, "data.loader_workers must be >= 0")
    _require(c.data.samples_per_shard >= 1, "data.samples_per_shard must be >= 1")
    _require(c.data.shuffle_buffer >= 1, "data.shuffle_buffer must be >= 1")
    _require(c.data.train_split in ("train", "unlabeled"),
             f"data.train_split must be 'train' or 'unlabeled' (stl10), got {c.data.train_split!r}")
    _require(c.data.train_split == "train" or c.data.dataset == "stl10",
             f"data.train_split={c.data.train_split} exists for stl10 only, not {c.data.dataset}")
    _require(not c.data.resample or c.train.steps_per_epoch is not None,
             "data.resample=true needs train.steps_per_epoch: with shards drawn with replacement, an epoch has no "
             "natural end")
    _require(0 < c.data.scale_min <= c.data.scale_max, "data.scale_min must be > 0 and <= data.scale_max")
    _require(0 <= c.data.contrast < 1, "data.contrast must be in [0, 1)")
    for key in ("batch_size", "val_batch_size"):
        batch, workers = getattr(c.data, key), c.scaling.num_workers
        _require(batch >= 1, f"data.{key} must be >= 1, got {batch}")
        _require(batch % workers == 0,
                 f"data.{key}={batch} is not divisible by scaling.num_workers={workers}: "
                 f"the global batch is split evenly across workers (try {max(workers, batch // workers * workers)})")
    _require(c.probe.lr > 0 and c.probe.hidden >= 1, "probe.lr must be > 0 and probe.hidden >= 1")
    _require(c.probe.val_batches is None or c.probe.val_batches >= 1, "probe.val_batches must be >= 1 or null")
    _require(len(c.eval.seq_lens) >= 1 and all(m >= 1 for m in c.eval.seq_lens),
             f"eval.seq_lens must be a non-empty list of lengths >= 1, got {c.eval.seq_lens}")
    _require(len(set(c.eval.seq_lens)) == len(c.eval.seq_lens), f"eval.seq_lens has repeats: {c.eval.seq_lens}")
    for key in ("train_samples", "val_samples"):
        value = getattr(c.eval, key)
        _require(value is None or value >= 1, f"eval.{key} must be >= 1 or null, got {value}")
    _require(c.eval.epochs >= 1 and c.eval.batch_size >= 1 and c.eval.hidden >= 1,
             "eval.epochs, eval.batch_size and eval.hidden must be >= 1")
    _require(c.eval.lr > 0, f"eval.lr must be > 0, got {c.eval.lr}")
