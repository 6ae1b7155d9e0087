"""The typed schema of a training run: every key a user can set, its default and a one-line comment.

Defaults follow the paper's published recipe (docs/paper-and-original-code.md#training-recipe);
`trainer/configs/default.yaml` scales it down to the embedded Fashion-MNIST default that trains in minutes on a laptop
CPU. Each section checks its own values (`check`) next to its fields; `Config.check` adds the checks that span sections.
Reading YAML and overrides lives in `trainer.config.loading`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from data_pipeline.datasets import dataset_names
from trainer.errors import ConfigError
from trainer.methods.catalog import CATALOG, DEFAULT_METHOD, method_entry

# The transformations of fashion-mnist/mnist sequences, as data_pipeline names their action groups.
AFFINE_ACTION_GROUPS = ("rotation", "scale", "translation", "brightness", "contrast")


def require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


@dataclass
class DataConfig:
    # fashion-mnist (the embedded default, fetched and written on first use) or a paper dataset whose shards
    # `python -m data_pipeline write DATASET` wrote (or that data.source_dir lets the run write itself); the
    # registry data_pipeline/datasets.py lists them. mnist: a second real dataset for the same sequences
    dataset: str = "fashion-mnist"
    shards: str = "~/seq-jepa/data/shards/fashion-mnist"  # folder, file:// or s3://bucket/prefix: train/ and val/
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
    samples_per_shard: Optional[int] = None  # shard size when preparing shards; None: up to 2000, >= 8 shards a split
    image_size: Optional[int] = None  # side of the views (fashion-mnist, cifar100, tinyimagenet); None: natural size
    batch_size: int = 256  # GLOBAL batch (sequences per optimizer step), split evenly across workers
    loader_workers: int = 1  # DataLoader worker processes per training worker
    # Where the views are rendered: loader (the loader processes compose finished uint8 views), device (they ship
    # the sources and every drawn parameter; the training process renders the views on its GPU, overlapped with the
    # previous step: far fewer loader processes per GPU), auto (device when scaling.use_gpu). The same seed gives
    # the same views either way.
    render_on: Literal["auto", "loader", "device"] = "auto"
    shuffle_buffer: int = 2000  # samples held for shuffling inside each loader worker
    # Training sequences drawn from each sample read (each with its own views and actions; no batch holds one
    # sample twice): k reads and decodes a sample once for k sequences, so an epoch (one pass over the shards)
    # has k times the steps; divide train.epochs by k to train on as many sequences. 1: the paper's one per sample.
    draws_per_sample: int = 1
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
    # The groups of those the model is told as actions (and the probes regress); the others still vary,
    # unannounced, like colour and lighting in the paper's rotation-conditioned 3DIEBench runs. None: all.
    announced_actions: Optional[list[str]] = None  # e.g. [rotation]; fashion-mnist/mnist
    # Load-time options of the paper's datasets (docs/paper-and-original-code.md#actions-per-dataset, #data); each
    # applies to its dataset only.
    latent_type: Literal["rot", "rotcolor", "color", "all"] = "rot"  # 3diebench: what the actions hold
    canonical_quaternions: bool = True  # 3diebench: every quaternion with w >= 0; false: the original's signs
    blur: bool = True  # cifar100/tinyimagenet: blur and its sigma action; false: the original's --no-blur
    legacy_action_norm: bool = False  # cifar100/tinyimagenet: the original's L2 norm across views
    # (docs/paper-and-original-code.md#c6-action-normalisation-across-views)
    legacy_pil_rounding: bool = False  # cifar100/tinyimagenet: views rounded to 8 bits after every op as the
    # original's PIL pipeline did (~1 grey level per op, up to ~13 after hue); false: float, rounded once
    fovea_size: int = 32  # stl10/imagenet: side of a glimpse, pixels
    use_saliency: bool = True  # stl10/imagenet: fixations drawn from the saliency map, else uniformly
    inhibition_of_return: bool = True  # stl10/imagenet: no fixation inside an earlier glimpse's square
    legacy_patch_transpose: bool = False  # stl10/imagenet: the original's transposed foveae
    # (docs/paper-and-original-code.md#c1-fovea-transposition)
    crop_size: Optional[int] = None  # imagenet: RandomResizedCrop side before the glimpses; None: centre square

    def check(self) -> None:
        require(self.dataset in dataset_names(), f"data.dataset must be one of {', '.join(dataset_names())}, got "
                                                 f"{self.dataset!r} (the registry: data_pipeline/datasets.py)")
        require(self.image_size is None or self.image_size >= 8,
                f"data.image_size must be >= 8 or null, got {self.image_size}")
        require(self.fovea_size >= 4, f"data.fovea_size must be >= 4, got {self.fovea_size}")
        require(self.crop_size is None or self.crop_size >= self.fovea_size,
                f"data.crop_size must be >= data.fovea_size or null, got {self.crop_size}")
        require(self.loader_workers >= 0, "data.loader_workers must be >= 0")
        require(self.samples_per_shard is None or self.samples_per_shard >= 1,
                "data.samples_per_shard must be >= 1 or null")
        require(self.shuffle_buffer >= 1, "data.shuffle_buffer must be >= 1")
        require(self.draws_per_sample >= 1, f"data.draws_per_sample must be >= 1, got {self.draws_per_sample}")
        require(self.train_split in ("train", "unlabeled"),
                f"data.train_split must be 'train' or 'unlabeled' (stl10), got {self.train_split!r}")
        require(self.train_split == "train" or self.dataset == "stl10",
                f"data.train_split={self.train_split} exists for stl10 only, not {self.dataset}")
        require(0 < self.scale_min <= self.scale_max, "data.scale_min must be > 0 and <= data.scale_max")
        require(0 <= self.contrast < 1, "data.contrast must be in [0, 1)")
        require(self.announced_actions is None or (len(self.announced_actions) > 0 and set(self.announced_actions)
                                                   <= set(AFFINE_ACTION_GROUPS)),
                f"data.announced_actions must be null or a non-empty list of {', '.join(AFFINE_ACTION_GROUPS)}, "
                f"got {self.announced_actions}")
        for key in ("batch_size", "val_batch_size"):
            require(getattr(self, key) >= 1, f"data.{key} must be >= 1, got {getattr(self, key)}")


@dataclass
class ModelConfig:
    """What every method shares; a method's own settings are its section (`seq_jepa.*`, `simclr.*`, ...)."""

    method: str = DEFAULT_METHOD  # the training method: seq_jepa, or a baseline of Table 1 (trainer/methods/catalog.py)
    encoder: Literal["resnet18", "convnet"] = "resnet18"  # convnet: a small 4-block CNN for CPU runs
    cifar_stem: bool = False  # ResNet-18 with 3x3/1 stem and no max-pool (small images)
    conv_width: int = 32  # convnet width of the first block (output dim = 8 x width)
    seq_len: int = 3  # M: observed views per training sequence (M+1 views are loaded)
    eval_seq_len: Optional[int] = None  # M used for validation/probes; None: same as seq_len
    action_proj_dim: int = 128  # P, width of the learned action embedding (seq_jepa, sen, equimod, cond_byol)

    def check(self) -> None:
        method_entry(self.method)  # an unknown method is one line listing the valid ones
        require(self.seq_len >= 1, f"model.seq_len (M) must be >= 1, got {self.seq_len}")
        require(self.eval_seq_len is None or self.eval_seq_len >= 1,
                f"model.eval_seq_len must be >= 1 or null, got {self.eval_seq_len}")
        require(self.action_proj_dim >= 1, "model.action_proj_dim must be >= 1")
        require(self.conv_width >= 1, "model.conv_width must be >= 1")


@dataclass
class EmaConfig:
    enabled: bool = True  # seq_jepa: EMA target encoder; off: the online encoder, detached (byol always has one)
    decay: float = 0.996  # starting decay tau_0
    # cosine: tau goes from decay to 1 over training, step by step; legacy_cosine_per_epoch: the authors' value,
    # changed once per epoch (each step uses the value after the previous step, the first step `decay`)
    schedule: Literal["cosine", "constant", "legacy_cosine_per_epoch"] = "cosine"

    def check(self) -> None:
        require(0.0 <= self.decay <= 1.0, f"ema.decay must be in [0, 1], got {self.decay}")


@dataclass
class OptimConfig:
    name: Literal["adamw", "adam"] = "adamw"  # the paper's code effectively used adam with weight_decay 0
    # (docs/paper-and-original-code.md#the-original-optimiser)
    lr: float = 4e-4  # peak learning rate; 0: the untrained floor (no step changes the weights; tag untrained=true)
    weight_decay: float = 1e-3  # on weights (ndim >= 2) only; biases and norms get 0
    warmup_epochs: float = 20.0  # linear warm-up from start_lr, per step
    start_lr: float = 1e-5
    final_lr: float = 1e-5  # end of the cosine decay
    schedule: Literal["cosine", "legacy_constant"] = "cosine"  # legacy_constant: the official code's effective schedule
    grad_clip: Optional[float] = None  # max global gradient norm; None: no clipping

    def check(self) -> None:
        require(self.lr >= 0 and self.start_lr >= 0 and self.final_lr >= 0,
                "optim.lr, optim.start_lr and optim.final_lr must be >= 0")
        require(self.warmup_epochs >= 0, "optim.warmup_epochs must be >= 0")
        require(self.grad_clip is None or self.grad_clip > 0, "optim.grad_clip must be > 0 or null")


@dataclass
class ProbeConfig:
    lr: float = 1e-3  # Adam learning rate of the online probes (their own optimizer)
    hidden: int = 1024  # width of the MLP regressor on encoder pairs (rotation is bilinear in a pair)
    val_batches: Optional[int] = None  # cap on validation batches per rank; None: the whole split

    def check(self) -> None:
        require(self.lr > 0 and self.hidden >= 1, "probe.lr must be > 0 and probe.hidden >= 1")
        require(self.val_batches is None or self.val_batches >= 1, "probe.val_batches must be >= 1 or null")


@dataclass
class EvalConfig:
    """Offline evaluation (`python -m trainer.evaluate`): probes on the frozen model
    (docs/paper-and-original-code.md#evaluation-protocol)."""

    # Inference lengths M_val: one z_AGG classifier and one path-integration probe per entry, each its own probe.
    seq_lens: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5, 6, 7, 8])
    train_samples: Optional[int] = None  # train-split sequences the probes learn from; None: the whole split
    val_samples: Optional[int] = None  # val-split sequences they are scored on; None: the whole split
    epochs: int = 100  # passes over the cached features
    # (300 at paper scale, as docs/paper-and-original-code.md#probe-hyper-parameters recommends)
    lr: float = 1e-3  # Adam, no weight decay (docs/paper-and-original-code.md#probe-hyper-parameters)
    batch_size: int = 256
    hidden: int = 1024  # width of the MLP regressor of the relative action
    # (docs/paper-and-original-code.md#online-probes)
    seed: int = 0  # probe initialisation and minibatch order
    feature_cache: bool = True  # keep extracted features under data.cache_dir/features and reuse them
    loader_workers: Optional[int] = None  # processes rendering views for the extraction (from a forkserver: safe
    # beside Ray); None: with a GPU the cores (a Ray task's CPUs) up to 4, on a CPU 0: in this process (faster
    # there: the model takes the cores). Same features for any value

    def check(self) -> None:
        require(len(self.seq_lens) >= 1 and all(m >= 1 for m in self.seq_lens),
                f"eval.seq_lens must be a non-empty list of lengths >= 1, got {self.seq_lens}")
        require(len(set(self.seq_lens)) == len(self.seq_lens), f"eval.seq_lens has repeats: {self.seq_lens}")
        for key in ("train_samples", "val_samples"):
            value = getattr(self, key)
            require(value is None or value >= 1, f"eval.{key} must be >= 1 or null, got {value}")
        require(self.epochs >= 1 and self.batch_size >= 1 and self.hidden >= 1,
                "eval.epochs, eval.batch_size and eval.hidden must be >= 1")
        require(self.lr > 0, f"eval.lr must be > 0, got {self.lr}")
        require(self.loader_workers is None or self.loader_workers >= 0,
                f"eval.loader_workers must be >= 0 or null, got {self.loader_workers}")


@dataclass
class TrainConfig:
    epochs: int = 1000
    steps_per_epoch: Optional[int] = None  # cap on steps per epoch; None: one pass over the shards
    seed: int = 42
    precision: Literal["fp32", "bf16", "auto"] = "fp32"  # bf16: autocast, BatchNorm statistics and the loss stay fp32;
    # auto: bf16 where the worker's CPU/GPU has it natively (trainer/training/precision.py), else fp32
    channels_last: bool = False  # NHWC activations: faster convolutions with oneDNN and on GPUs
    # torch.compile the model block by block (trainer/training/compile.py); shapes static (the training loader
    # drops the last partial batch): each block compiles at the first step, and once more at the first validation
    compile: bool = False
    # torch.compile's mode; None: its default. reduce-overhead: CUDA graphs on a GPU (nothing more on a CPU);
    # max-autotune: also benchmarks kernel choices (longer compile)
    compile_mode: Optional[Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]] = None
    peak_tflops: Optional[float] = None  # per worker; None: from the accelerator table, or measured on CPU
    log_every_steps: int = 20  # per-step metrics cadence (every report is a barrier across workers)
    eval_every_epochs: int = 1  # validation + probe metrics cadence
    checkpoint_every_epochs: int = 1  # checkpoint cadence (the last epoch is always checkpointed)
    checkpoint_every_steps: Optional[int] = None  # also checkpoint mid-epoch every N steps (a resume continues
    # from the exact batch: RNG states and the loaders' positions are saved too)
    keep_checkpoints: int = 2  # checkpoints kept in the run's storage

    def check(self) -> None:
        require(self.epochs >= 1, f"train.epochs must be >= 1, got {self.epochs}")
        require(self.steps_per_epoch is None or self.steps_per_epoch >= 1,
                "train.steps_per_epoch must be >= 1 or null")
        for key in ("log_every_steps", "eval_every_epochs", "checkpoint_every_epochs", "keep_checkpoints"):
            require(getattr(self, key) >= 1, f"train.{key} must be >= 1, got {getattr(self, key)}")
        require(self.checkpoint_every_steps is None or self.checkpoint_every_steps >= 1,
                f"train.checkpoint_every_steps must be >= 1 or null, got {self.checkpoint_every_steps}")
        require(self.peak_tflops is None or self.peak_tflops > 0,
                f"train.peak_tflops must be > 0 (TFLOP/s of one worker) or null, got {self.peak_tflops}")
        require(self.compile or self.compile_mode is None,
                f"train.compile_mode={self.compile_mode} is read only with train.compile=true; set it or drop the mode")


@dataclass
class ScalingConfig:
    num_workers: int = 2  # Ray Train workers
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    parallelism: Literal["fsdp2", "ddp"] = "fsdp2"
    torch_threads: Optional[int] = None  # intra-op threads per worker; None: cpus_per_worker

    def check(self) -> None:
        require(self.num_workers >= 1, f"scaling.num_workers must be >= 1, got {self.num_workers}")
        require(self.cpus_per_worker > 0, "scaling.cpus_per_worker must be > 0")
        require(self.torch_threads is None or self.torch_threads >= 1, "scaling.torch_threads must be >= 1")


@dataclass
class RunConfig:
    name: Optional[str] = None  # run name; reusing a name resumes that run from its latest checkpoint
    storage_path: str = "~/seq-jepa/runs"  # where Ray Train keeps checkpoints (local path or s3://)
    ray_address: Optional[str] = None  # None: join the cluster in RAY_ADDRESS or start a local instance
    max_failures: int = 0  # worker-group restarts from the latest checkpoint before giving up
    stop_grace_s: float = 120.0  # on SIGTERM (preemption notice) to the driver: time the workers get to write
    # a checkpoint at their current step before the driver gives up on them

    def check(self) -> None:
        require(self.max_failures >= -1, f"run.max_failures must be >= 0 (or -1: retry forever), got "
                                         f"{self.max_failures}")
        require(self.stop_grace_s >= 0, f"run.stop_grace_s must be >= 0, got {self.stop_grace_s}")


@dataclass
class DebugConfig:
    """Switches for testing the trainer itself (never set in a real run)."""

    exit_at_step: Optional[int] = None  # one worker process exits abruptly after this step (as if OOM-killed),
    # only in a run that did not start from a checkpoint, so a restored group goes on
    exit_rank: Optional[int] = None  # which rank exits; None: the last one
    sample_log: Optional[str] = None  # folder: each rank appends the sample keys of every step it trains to
    # rank<r>.jsonl (the soak test checks from it that a kill-and-resume loses and repeats no sample)
    nan_at_step: Optional[int] = None  # the training loss of this step becomes NaN on every rank (after its
    # optimizer step), only in a run that did not start from a checkpoint: the non-finite check's test

    def check(self) -> None:
        require(self.exit_at_step is None or self.exit_at_step >= 1, "debug.exit_at_step must be >= 1 or null")
        require(self.nan_at_step is None or self.nan_at_step >= 1, "debug.nan_at_step must be >= 1 or null")


@dataclass
class TrackingConfig:
    tracking_uri: str = "sqlite:///~/seq-jepa/mlflow.db"  # MLFLOW_TRACKING_URI wins when set
    experiment: str = "seq-jepa"
    log_model: bool = True  # final encoder weights as an artifact

    def check(self) -> None:
        """Nothing beyond the types."""


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
    debug: DebugConfig = field(default_factory=DebugConfig)
    # The methods' own sections (`seq_jepa:`, `simclr:`, ...; trainer/methods/catalog.py), by method name: the
    # chosen method's, and any other a config file holds (a recipe may set several methods; only the chosen
    # one's settings are read). Written at the top level of a config file like the sections above.
    methods: dict[str, Any] = field(default_factory=dict)

    @property
    def eval_seq_len(self) -> int:
        return self.model.eval_seq_len or self.model.seq_len

    @property
    def method(self) -> Any:
        """The chosen method's settings: its section, its defaults where a config gave none."""
        entry = method_entry(self.model.method)
        return self.methods.setdefault(entry.name, entry.settings())

    def check(self) -> None:
        """Each section's own checks (the first that fails is the error), then those that span sections."""
        for section in (self.model, self.ema, self.optim, self.train, self.run, self.debug, self.scaling,
                        self.data, self.probe, self.eval, self.tracking):
            section.check()
        entry = method_entry(self.model.method)
        _ = self.method  # the chosen method's section, with its defaults if none was given
        for name, settings in self.methods.items():
            require(name in CATALOG and isinstance(settings, CATALOG[name].settings),
                    f"config section '{name}' is not a method's; methods: {', '.join(sorted(CATALOG))}")
            settings.check(name)
        if entry.views > 2:
            require(min(self.model.seq_len, self.eval_seq_len) >= entry.views - 1,
                    f"model.method={entry.name} trains on {_COUNT.get(entry.views, entry.views)} consecutive views: "
                    f"set model.seq_len (and model.eval_seq_len) >= {entry.views - 1}, got {self.model.seq_len} "
                    f"({self.eval_seq_len})")
        require(self.debug.exit_rank is None or 0 <= self.debug.exit_rank < self.scaling.num_workers,
                f"debug.exit_rank must name a rank below scaling.num_workers={self.scaling.num_workers}, got "
                f"{self.debug.exit_rank}")
        require(not self.data.resample or self.train.steps_per_epoch is not None,
                "data.resample=true needs train.steps_per_epoch: with shards drawn with replacement, an epoch has "
                "no natural end")
        for key in ("batch_size", "val_batch_size"):
            batch, workers = getattr(self.data, key), self.scaling.num_workers
            require(batch % workers == 0,
                    f"data.{key}={batch} is not divisible by scaling.num_workers={workers}: the global batch is "
                    f"split evenly across workers (try {max(workers, batch // workers * workers)})")


_COUNT = {3: "three", 4: "four", 5: "five"}
