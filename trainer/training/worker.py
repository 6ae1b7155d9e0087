"""What each Ray Train worker runs: build, restore, then the loop over epochs and steps.

    for each epoch:  for each batch: train_step; hooks; maybe_log; maybe_stop; maybe_checkpoint
                     end of epoch: validate, checkpoint (or report), maybe stop
    finish: the final encoder weights to MLflow

The step itself is `trainer.training.step.train_step`; what a checkpoint holds is `TrainState`'s business.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import ray.train
import torch
import torch.distributed as dist

from data_pipeline import SequenceLoader
from trainer.checkpointing.dcp import disk_full, full_encoder_state
from trainer.config import Config, config_from_dict
from trainer.data import DeviceFeed, build_loader, normalisation
from trainer.errors import CheckpointError, TrainingDiverged
from trainer.metric_names import DATA_WAIT_FRAC, SAMPLES_PER_S
from trainer.tracking import MetricsLogger
from trainer.training.ema import ema_decay_at
from trainer.training.flops import batch_step_flops, mfu_metrics, peak_flops
from trainer.training.hooks import StepHook, build_hooks
from trainer.training.optim import lr_at
from trainer.training.precision import resolve_precision
from trainer.training.preemption import StopCheck
from trainer.training.setup import train_state_for
from trainer.training.state import TrainState
from trainer.training.step import train_step
from trainer.training.sums import all_reduce_named
from trainer.training.validation import validate


def train_worker(loop_config: dict) -> None:
    w = build_worker(loop_config)
    for epoch in range(w.state.epoch, w.config.train.epochs):
        w.begin_epoch(epoch)
        if run_epoch(w) or end_epoch(w):
            return  # stopped (SIGTERM): a checkpoint at the current step is written
    finish(w)


def run_epoch(w: Worker) -> bool:
    """The epoch's remaining steps; True when the run stops mid-epoch. Nothing here waits for the device except
    the logging window, once per `train.log_every_steps` steps."""
    state, train = w.state, w.config.train
    for batch in w.epoch_batches():
        lr = lr_at(state.step, w.steps_per_epoch, w.total_steps, w.config.optim)
        decay = ema_decay_at(state.step, w.total_steps, w.config.ema.decay, w.config.ema.schedule, w.steps_per_epoch)
        for hook in w.hooks:
            hook.before_step(state.step + 1, batch)
        state.window.add_step(state.step + 1, train_step(state, batch, lr, decay, w.config.optim.grad_clip, w.bf16))
        state.step += 1
        state.batches_done += 1
        for hook in w.hooks:
            hook.after_step(state.epoch, state.step, batch)
        if state.step % train.log_every_steps == 0 or w.epoch_done:
            log_window(w, lr, decay)
        if not w.epoch_done:
            if w.stop_requested:
                checkpoint(w, {"epoch": state.epoch, "step": state.step, "preempted": 1})
                w.logger.flush()
                return True
            if w.step_checkpoint_due():
                checkpoint(w, {"epoch": state.epoch, "step": state.step})
    return False


@dataclass
class Worker:
    """One Ray Train worker's run: its config, its place in the group, its loaders, state and outlets."""

    config: Config
    config_tree: dict  # the resolved config as the driver sent it: what a checkpoint stores
    rank: int
    world: int
    state: TrainState
    val_loader: SequenceLoader
    normalise: tuple[torch.Tensor, torch.Tensor]  # the shard set's per-channel (mean, std) on the device
    bf16: bool
    logger: MetricsLogger
    stop: StopCheck
    hooks: list[StepHook]
    steps_per_epoch: int
    feed: DeviceFeed  # loader batches -> device batches
    peak_flops: float  # this worker's accelerator, FLOP/s (trainer.training.flops.peak_flops)
    step_flops: float | None = None  # one step of one rank, counted once on the first batch
    wait_s: float = 0.0  # this window's time spent waiting for batches
    window_start: float = field(default_factory=time.perf_counter)
    stop_requested: bool = False  # as of the last logging window, on every rank alike
    checkpoint_step: int | None = None  # the step of the run's latest checkpoint

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.config.train.epochs

    @property
    def epoch_done(self) -> bool:
        return self.state.batches_done == self.steps_per_epoch

    def begin_epoch(self, epoch: int) -> None:
        """A new epoch starts at its first batch; the one a restored state is in continues where it was."""
        if epoch != self.state.epoch:
            self.state.epoch, self.state.batches_done = epoch, 0
        self.state.loader.set_epoch(epoch)
        self.wait_s, self.window_start = 0.0, time.perf_counter()

    def epoch_batches(self):
        """The epoch's remaining batches, on the device (`DeviceFeed`)."""
        for batch in self.feed(self._loader_batches()):
            if self.step_flops is None:  # once: only the batch's shapes are read (trainer.training.flops)
                self.step_flops = batch_step_flops(self.config, batch, self.state.loader.num_classes)
            yield batch

    def _loader_batches(self):
        """The epoch's remaining loader batches; the time spent waiting for each one is counted."""
        batches = iter(self.state.loader)
        for _ in range(self.steps_per_epoch - self.state.batches_done):
            started = time.perf_counter()
            batch = next(batches, None)
            if batch is None:
                return
            self.wait_s += time.perf_counter() - started
            yield batch

    def step_checkpoint_due(self) -> bool:
        every = self.config.train.checkpoint_every_steps
        return bool(every) and self.state.step % every == 0


def build_worker(loop_config: dict) -> Worker:
    """This Ray Train worker's run: its place in the group from Ray's context, its checkpoint from Ray Train."""
    context = ray.train.get_context()
    config = config_from_dict(loop_config["config"])
    device = ray.train.torch.get_device() if config.scaling.use_gpu else torch.device("cpu")
    restored = ray.train.get_checkpoint()
    if restored is None:
        return make_worker(loop_config, context.get_world_rank(), context.get_world_size(), device)
    with restored.as_directory() as folder:
        return make_worker(loop_config, context.get_world_rank(), context.get_world_size(), device, Path(folder))


def make_worker(loop_config: dict, rank: int, world: int, device: torch.device,
                checkpoint_folder: Path | None = None) -> Worker:
    """Loaders, training state (restored from `checkpoint_folder` if given), MLflow logger, stop check, hooks."""
    # Model outputs are never modified in place here, which is all this FSDP2 warning is about.
    warnings.filterwarnings("ignore", message=".*returned a view tensor.*")
    config = config_from_dict(loop_config["config"])
    torch.set_num_threads(config.scaling.torch_threads or max(1, int(config.scaling.cpus_per_worker)))

    train_loader = build_loader(config, "train", rank, world)
    val_loader = build_loader(config, "val", rank, world)
    steps_per_epoch = len(train_loader)
    if config.train.steps_per_epoch is not None:
        steps_per_epoch = min(steps_per_epoch, config.train.steps_per_epoch)
    state = train_state_for(config, train_loader, device, rank)
    precision, precision_warning = resolve_precision(config.train.precision, device)
    if precision_warning and rank == 0:
        warnings.warn(precision_warning)

    if checkpoint_folder is not None:
        state.restore(checkpoint_folder, config.train.seed, rank, world)
    restored = checkpoint_folder is not None
    mlflow = loop_config.get("mlflow", {})
    logger = MetricsLogger(mlflow.get("tracking_uri"), mlflow.get("run_id"), enabled=rank == 0, resumed=restored)
    logger.set_tag("precision", precision)  # what `train.precision` resolved to on this hardware
    peak, peak_source = peak_flops(device, precision == "bf16", config.train.peak_tflops)
    logger.set_tag("peak_flops", f"{peak / 1e12:.3g} TFLOP/s per worker ({peak_source})")  # what train/mfu is of
    normalise = normalisation(train_loader, device)
    return Worker(config, loop_config["config"], rank, world, state, val_loader, normalise, precision == "bf16",
                  logger, StopCheck(loop_config.get("stop_signal"), rank), build_hooks(config, rank, world, restored),
                  steps_per_epoch, DeviceFeed(device, *normalise, train_loader.composer), peak,
                  checkpoint_step=state.step if restored else None)


def log_window(w: Worker, lr: float, decay: float) -> None:
    """The window's per-step means over all ranks (the loss, its terms, the gradient norm), its data-wait share
    and the schedules, to MLflow (rank 0).

    The one place a step waits for the device: one all-reduce of everything the ranks must agree on (the
    stop request and the count of non-finite losses included) and one read of its result.
    """
    state = w.state
    elapsed = time.perf_counter() - w.window_start
    means = state.window.means()
    host = {WAIT: w.wait_s / elapsed, SKIPPED: state.loader.corrupt_samples + w.val_loader.corrupt_samples,
            STOPS: w.stop.local_request()}
    totals = all_reduce_named({**means, **host, NONFINITE: state.window.nonfinite}, state.device)
    stop_if_diverged(w, totals[NONFINITE])
    w.stop_requested = totals[STOPS] > 0
    w.logger.log_metrics({**{name: totals[name] / w.world for name in means}, "train/lr": lr,
                          "train/ema_decay": decay,
                          SAMPLES_PER_S: w.config.data.batch_size * state.window.steps / elapsed,
                          DATA_WAIT_FRAC: totals[WAIT] / w.world, "train/epoch": state.epoch,
                          "data/skipped_samples": totals[SKIPPED],
                          **mfu_metrics(w.step_flops, state.window.steps, elapsed, w.world, w.peak_flops)}, state.step)
    state.window.reset()
    w.wait_s, w.window_start = 0.0, time.perf_counter()


# What else the window's all-reduce carries (summed over the ranks).
WAIT, SKIPPED, STOPS, NONFINITE = DATA_WAIT_FRAC, "data/skipped_samples", "stop_requests", "nonfinite_losses"


def stop_if_diverged(w: Worker, nonfinite: float | None = None) -> None:
    """Stop with one line naming the first step whose loss was not finite on some rank, before anything of it is
    logged or checkpointed. `nonfinite`: the ranks' count as the window's all-reduce gave it (None: reduce it
    here, before a checkpoint). Naming the step costs a second collective, only when there is one to name."""
    window = w.state.window
    if nonfinite is None:
        nonfinite = all_reduce_named({NONFINITE: window.nonfinite}, w.state.device)[NONFINITE]
    if nonfinite == 0:
        return
    first = window.first_nonfinite if window.first_nonfinite is not None else torch.tensor(math.inf)
    first = first.to(w.state.device, torch.float64).clone()
    if dist.is_initialized():
        dist.all_reduce(first, op=dist.ReduceOp.MIN)
    at = f"step {int(first)}" if math.isfinite(first) else f"the steps up to {w.state.step}"
    latest = f"the step {w.checkpoint_step} checkpoint" if w.checkpoint_step is not None else "no checkpoint yet"
    raise TrainingDiverged(f"the training loss became NaN or infinite at {at}; stopped without checkpointing it "
                           f"(the run keeps {latest}): lower optim.lr or set optim.grad_clip, then run again")


def end_epoch(w: Worker) -> bool:
    """Validation (at its cadence), then a checkpoint or a plain report to Ray Train; True: stop now (SIGTERM)."""
    state, train = w.state, w.config.train
    metrics = {"epoch": state.epoch, "step": state.step}
    last_epoch = state.epoch == train.epochs - 1
    if (state.epoch + 1) % train.eval_every_epochs == 0 or last_epoch:
        metrics.update(validate(state, w.val_loader, w.normalise, state.loader.action_groups,
                                w.config.probe.val_batches, w.bf16))
        w.logger.log_metrics({k: v for k, v in metrics.items() if "/" in k}, state.step)
    stopping = not last_epoch and w.stop_requested  # as of the epoch's last step, which is always logged
    if (state.epoch + 1) % train.checkpoint_every_epochs == 0 or last_epoch or stopping or w.step_checkpoint_due():
        checkpoint(w, {**metrics, **({"preempted": 1} if stopping else {})})
    else:
        ray.train.report(metrics)
    if stopping:
        w.logger.flush()
    return stopping


def checkpoint(w: Worker, metrics: dict) -> None:
    """Every rank writes its share locally; Ray Train uploads them all and registers the checkpoint. Never of a
    state whose loss went non-finite since the last logging window."""
    stop_if_diverged(w)
    folder = w.state.save(w.config_tree, w.world, epoch_done=w.epoch_done)
    try:
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(folder)))
        w.checkpoint_step = w.state.step
    except OSError as err:  # uploading into run.storage_path; Ray Train registers nothing half-written
        if not disk_full(err):
            raise
        raise CheckpointError(f"no space left on the device of run.storage_path={w.config.run.storage_path} "
                              f"uploading the step {w.state.step} checkpoint; the previous checkpoint is intact: free "
                              "space and run the same command again to resume") from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def finish(w: Worker) -> None:
    if w.config.tracking.log_model:
        weights = full_encoder_state(w.state.model)  # collective: every rank takes part
        if w.rank == 0:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "encoder.pt"
                torch.save(weights, path)
                w.logger.log_artifact(str(path), "model")
    w.logger.flush()
