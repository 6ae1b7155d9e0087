"""What each Ray Train worker runs: build, (resume), train, evaluate, checkpoint, log.

A restored run continues with the batch after the checkpoint's step (`trainer.resume`), so its loss
curve and final weights match an uninterrupted run's.

`train_step` is the whole optimisation step in one place: batch -> loss -> optimizer step -> EMA
update -> probe update.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import ray.train
import torch
import torch.distributed as dist
from torch import nn

from trainer import checkpoint as ckpt
from trainer.config import Config, config_from_dict
from trainer.data import build_loader, normalisation, to_model_inputs
from trainer.ema import ema_decay_at, ema_update_
from trainer.errors import CheckpointError
from trainer.model import SeqJEPA, build_encoder
from trainer.optim import build_optimizer, lr_at, set_lr
from trainer.parallel import parallelize, replicate, unwrap
from trainer.precision import resolve_precision
from trainer.preemption import StopCheck
from trainer.probes import OnlineProbes, ProbeMetrics, effective_rank, probe_features, probe_loss
from trainer.resume import StartPoint, rank_state, restore, seed_rank, trainer_state
from trainer.sample_log import SampleLog
from trainer.tracking import MetricsLogger


def build_model(config: Config, action_dim: int, in_channels: int) -> SeqJEPA:
    m = config.model
    encoder = build_encoder(m.encoder, in_channels=in_channels, cifar_stem=m.cifar_stem, width=m.conv_width,
                            channels_last=config.train.channels_last)
    return SeqJEPA(encoder, action_dim, action_cond=m.action_cond, learn_action_embedding=m.learn_action_embedding,
                   action_proj_dim=m.action_proj_dim, num_heads=m.num_heads, num_layers=m.num_layers,
                   mlp_ratio=m.mlp_ratio, dropout=m.dropout, pred_hidden=m.pred_hidden, use_ema=config.ema.enabled)


@dataclass
class Parts:
    """Everything a step touches; `model` may be sharded (FSDP2) or wrapped (DDP)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    probes: nn.Module
    probe_optimizer: torch.optim.Optimizer
    device: torch.device
    mean: torch.Tensor  # (C, 1, 1) per-channel normalisation, on the device
    std: torch.Tensor
    autocast: bool

    def checkpointables(self) -> dict:
        return {"seq_jepa": (self.model, self.optimizer), "probes": (self.probes, self.probe_optimizer)}

    def amp(self):
        if not self.autocast:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)


def train_step(p: Parts, batch: dict, lr: float, ema_decay: float, grad_clip: float | None) -> torch.Tensor:
    obs, target, rel_actions = to_model_inputs(batch, p.device, p.mean, p.std)
    set_lr(p.optimizer, lr)
    with p.amp():
        out = p.model(obs, target, rel_actions)
    p.optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(p.model.parameters(), grad_clip)
    p.optimizer.step()

    seq_jepa = unwrap(p.model)
    if seq_jepa.target_encoder is not None:
        ema_update_(seq_jepa.target_encoder, seq_jepa.encoder, ema_decay)

    # Probes learn from detached features with their own optimizer: no gradient reaches the model.
    pred = p.probes(probe_features(out))
    loss = probe_loss(pred, batch["label"].to(p.device), rel_actions[:, 0].float())
    p.probe_optimizer.zero_grad(set_to_none=True)
    loss.backward()
    p.probe_optimizer.step()
    return out.loss.detach().float()


@torch.no_grad()
def evaluate(p: Parts, loader, action_groups: dict, max_batches: int | None) -> dict[str, float]:
    """Probe metrics over the whole validation split, all ranks together.

    Every rank runs the same number of forwards (FSDP2 forwards are collective); a rank whose share
    ran out repeats its last batch with weight 0.
    """
    p.model.eval()
    p.probes.eval()
    n_batches = torch.tensor(len(loader), device=p.device)
    if dist.is_initialized():
        dist.all_reduce(n_batches, op=dist.ReduceOp.MAX)
    n_batches = int(n_batches) if max_batches is None else min(int(n_batches), max_batches)
    metrics = ProbeMetrics(unwrap(p.probes).equi_enc[-1].out_features, action_groups, p.device)
    features_for_rank = {"enc": [], "agg": []}
    iterator, batch = iter(loader), None
    for _ in range(n_batches):
        nxt = next(iterator, None)
        weight = 1.0 if nxt is not None else 0.0
        batch = nxt if nxt is not None else batch
        obs, target, rel_actions = to_model_inputs(batch, p.device, p.mean, p.std)
        with p.amp():
            out = p.model(obs, target, rel_actions)
        pred = p.probes(probe_features(out))
        metrics.update(pred, batch["label"].to(p.device), rel_actions[:, 0].float(), out.loss.float(), weight)
        if weight and sum(len(f) for f in features_for_rank["enc"]) < 2048:
            features_for_rank["enc"].append(out.pair[0].float())
            features_for_rank["agg"].append(out.z_agg.float())
    p.model.train()
    p.probes.train()
    result = metrics.compute()
    if features_for_rank["enc"]:
        result["train/eff_rank_enc"] = effective_rank(torch.cat(features_for_rank["enc"]))
        result["train/eff_rank_agg"] = effective_rank(torch.cat(features_for_rank["agg"]))
    return result


def _sum_across_ranks(values: list[float], device: torch.device) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_initialized():
        dist.all_reduce(t)
    return t.tolist()


def train_worker(loop_config: dict) -> None:
    # Model outputs are never modified in place here, which is all this FSDP2 warning is about.
    warnings.filterwarnings("ignore", message=".*returned a view tensor.*")
    config = config_from_dict(loop_config["config"])
    mlflow_cfg = loop_config.get("mlflow", {})
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(config.scaling.torch_threads or max(1, int(config.scaling.cpus_per_worker)))
    device = ray.train.torch.get_device() if config.scaling.use_gpu else torch.device("cpu")

    train_loader = build_loader(config, "train", rank, world)
    val_loader = build_loader(config, "val", rank, world)
    steps_per_epoch = len(train_loader)
    if config.train.steps_per_epoch is not None:
        steps_per_epoch = min(steps_per_epoch, config.train.steps_per_epoch)
    total_steps = steps_per_epoch * config.train.epochs

    torch.manual_seed(config.train.seed)  # identical initial weights on every rank
    model = build_model(config, train_loader.action_dim, train_loader.channels).to(device)
    probes = OnlineProbes(model.encoder.out_dim, model.token_dim, train_loader.action_dim, train_loader.num_classes,
                          config.probe.hidden).to(device)
    seed_rank(config.train.seed, rank)
    model = parallelize(model, config.scaling.parallelism, device)
    probes = replicate(probes, device)
    precision, precision_warning = resolve_precision(config.train.precision, device)
    if precision_warning and rank == 0:
        warnings.warn(precision_warning)
    parts = Parts(model, build_optimizer(model, config.optim), probes,
                  torch.optim.Adam(probes.parameters(), lr=config.probe.lr), device,
                  *normalisation(train_loader, device), precision == "bf16")

    start = StartPoint()
    restored = ray.train.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as folder:
            start = restore(Path(folder), parts.checkpointables(), train_loader, rank, world, config.train.seed,
                            device)

    logger = MetricsLogger(mlflow_cfg.get("tracking_uri"), mlflow_cfg.get("run_id"), enabled=rank == 0,
                           resumed=restored is not None)
    logger.set_tag("precision", precision)  # what `train.precision` resolved to on this hardware
    stop = StopCheck(loop_config.get("stop_signal"), rank, device)
    samples = SampleLog(config.train.sample_log, rank)
    exit_rank = world - 1 if config.faults.exit_rank is None else config.faults.exit_rank
    exit_at = config.faults.exit_at_step if restored is None and rank == exit_rank else None

    def save(epoch: int, step: int, batches_done: int, window: tuple[float, int], metrics: dict) -> None:
        epoch_done = batches_done == steps_per_epoch
        state = trainer_state(epoch, step, batches_done, epoch_done, world, config.data.loader_workers,
                              loop_config["config"])
        folder = ckpt.save_checkpoint(parts.checkpointables(), state,
                                      rank_state(device, train_loader.position, window))
        try:
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(folder)))
        except OSError as err:  # uploading into run.storage_path; Ray Train registers nothing half-written
            if not ckpt.disk_full(err):
                raise
            raise CheckpointError(f"no space left on the device of run.storage_path={config.run.storage_path} "
                                  f"uploading the step {step} checkpoint; the previous checkpoint is intact: free "
                                  "space and run the same command again to resume") from None
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    global_batch, step, every_steps = config.data.batch_size, start.step, config.train.checkpoint_every_steps
    for epoch in range(start.epoch, config.train.epochs):
        train_loader.set_epoch(epoch)
        done = start.batches_done if epoch == start.epoch else 0
        window_loss, window_steps = start.window if epoch == start.epoch else (0.0, 0)
        window_wait, window_start = 0.0, time.perf_counter()
        batches = iter(itertools.islice(train_loader, steps_per_epoch - done))
        while True:
            wait_start = time.perf_counter()
            batch = next(batches, None)
            if batch is None:
                break
            window_wait += time.perf_counter() - wait_start
            lr = lr_at(step, steps_per_epoch, total_steps, config.optim)
            decay = ema_decay_at(step, total_steps, config.ema.decay, config.ema.schedule)
            loss = train_step(parts, batch, lr, decay, config.optim.grad_clip)
            window_loss += float(loss)
            step += 1
            done += 1
            window_steps += 1
            samples.record(epoch, step, batch["sample_keys"])
            if step == exit_at:
                os._exit(1)  # fault injection: die like an OOM-killed process, mid-epoch, no cleanup
            if step % config.train.log_every_steps == 0 or done == steps_per_epoch:
                elapsed = time.perf_counter() - window_start
                skipped = train_loader.corrupt_samples + val_loader.corrupt_samples
                loss_sum, wait_sum, skipped = _sum_across_ranks(
                    [window_loss / window_steps, window_wait / elapsed, skipped], device)
                loss_mean, wait_frac = loss_sum / world, wait_sum / world
                if not math.isfinite(loss_mean):
                    raise FloatingPointError(f"training loss became {loss_mean} at step {step}; lower optim.lr "
                                             "or set optim.grad_clip")
                logger.log_metrics({"train/loss": loss_mean, "train/lr": lr, "train/ema_decay": decay,
                                    "train/samples_per_s": global_batch * window_steps / elapsed,
                                    "train/data_wait_frac": wait_frac, "train/epoch": epoch,
                                    "data/skipped_samples": skipped}, step)
                window_loss, window_wait, window_start, window_steps = 0.0, 0.0, time.perf_counter(), 0
            if done < steps_per_epoch:
                if stop.should_stop():
                    save(epoch, step, done, (window_loss, window_steps), {"epoch": epoch, "step": step,
                                                                          "preempted": 1})
                    logger.flush()
                    return
                if every_steps and step % every_steps == 0:
                    save(epoch, step, done, (window_loss, window_steps), {"epoch": epoch, "step": step})

        metrics = {"epoch": epoch, "step": step}
        last_epoch = epoch == config.train.epochs - 1
        if (epoch + 1) % config.train.eval_every_epochs == 0 or last_epoch:
            metrics.update(evaluate(parts, val_loader, train_loader.action_groups, config.probe.val_batches))
            logger.log_metrics({k: v for k, v in metrics.items() if "/" in k}, step)
        stopping = not last_epoch and stop.should_stop()
        if ((epoch + 1) % config.train.checkpoint_every_epochs == 0 or last_epoch or stopping
                or (every_steps and step % every_steps == 0)):
            save(epoch, step, done, (0.0, 0), {**metrics, **({"preempted": 1} if stopping else {})})
        else:
            ray.train.report(metrics)
        if stopping:
            logger.flush()
            return

    if config.tracking.log_model:
        weights = ckpt.full_encoder_state(parts.model)
        if rank == 0:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "encoder.pt"
                torch.save(weights, path)
                logger.log_artifact(str(path), "model")
    logger.flush()
