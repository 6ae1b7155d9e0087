"""Resuming exactly: what a checkpoint holds beyond the weights, and where a restored run starts.

Model, EMA target, optimizers and probes come back through DCP (`trainer.checkpoint`); the LR and EMA
schedules are functions of the step. Each rank also saves its RNG states (dropout draws from the torch
generator), its training loader's position inside the epoch and its half-filled logging window. The
loader workers' random streams need no saving: they are derived from (seed, epoch, rank, worker,
batch), so the position alone reproduces them.
"""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from data_pipeline import SequenceLoader, StreamPosition
from trainer import checkpoint as ckpt
from trainer.errors import CheckpointError


@dataclass
class StartPoint:
    epoch: int = 0
    step: int = 0
    batches_done: int = 0  # batches of `epoch` already trained
    window: tuple[float, int] = (0.0, 0)  # this rank's (loss sum, steps) since the last logged step
    checkpoint: Path | None = None  # where it came from; None: a fresh start


def seed_rank(seed: int, rank: int) -> None:
    """After the (shared) initialisation: each rank draws its own dropout masks."""
    torch.manual_seed(seed * 1009 + rank + 1)
    random.seed(seed * 1009 + rank + 1)


def rank_state(device: torch.device, position: StreamPosition, window: tuple[float, int]) -> dict:
    state = {"torch_rng": torch.get_rng_state(), "python_rng": random.getstate(), "position": position.to_dict(),
             "window": list(window)}
    if device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(device)
    return state


def _restore_rng(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch_rng"])
    version, internal, gauss = state["python_rng"]
    random.setstate((version, tuple(internal), gauss))
    if device.type == "cuda" and "cuda_rng" in state:
        torch.cuda.set_rng_state(state["cuda_rng"], device)


def trainer_state(epoch: int, step: int, batches_done: int, epoch_done: bool, world: int, loader_workers: int,
                  config: dict) -> dict:
    return {"epoch": epoch, "step": step, "batches_done": batches_done, "epoch_done": epoch_done,
            "world_size": world, "loader_workers": loader_workers, "config": config}


def restore(checkpoint: Path, parts: dict, loader: SequenceLoader, rank: int, world: int, seed: int,
            device: torch.device) -> StartPoint:
    """Load `checkpoint` (or, if it is damaged, the newest older one of the same run folder) and set the
    RNG and the loader so training continues with the batch after the saved step."""
    for candidate in _candidates(checkpoint):
        try:
            saved = ckpt.load_checkpoint(candidate, parts)
        except CheckpointError as err:
            if rank == 0:
                warnings.warn(f"{err}; trying the run's previous checkpoint")
            continue
        start = _start_point(candidate, saved, loader, rank, world, seed, device)
        if rank == 0:
            print(f"[seq-jepa] resumed from {candidate} (epoch {start.epoch}, step {start.step}, "
                  f"{start.batches_done} batches into the epoch)", flush=True)
        return start
    raise CheckpointError(f"no checkpoint of {checkpoint.parent} could be read (the newest is {checkpoint}); "
                          "move the damaged checkpoint_* folders out of the run folder, or start afresh under "
                          "another run.name")


def _candidates(checkpoint: Path) -> list[Path]:
    """The checkpoint Ray Train picked, then the run's older complete ones, newest first (local storage)."""
    older = [p for p in ckpt.checkpoints_of_run(checkpoint.parent) if p.name < checkpoint.name]
    return [checkpoint, *reversed(older)]


def _start_point(folder: Path, saved: dict, loader: SequenceLoader, rank: int, world: int, seed: int,
                 device: torch.device) -> StartPoint:
    epoch_done = saved.get("epoch_done", "batches_done" not in saved)  # older checkpoints: epoch ends only
    start = StartPoint(saved["epoch"] + 1 if epoch_done else saved["epoch"], saved["step"],
                       0 if epoch_done else saved["batches_done"], checkpoint=folder)
    mine = ckpt.read_rank_state(folder, rank) if saved.get("world_size") == world else None
    position = StreamPosition.from_dict(mine["position"]) if mine else None
    if mine is not None and len(position.done_chunks) == loader.readers:
        _restore_rng(mine, device)
        if not epoch_done:
            loader.resume_from(position)
            start.window = (float(mine["window"][0]), int(mine["window"][1]))
        return start
    # Another layout: the weights and optimizer reshard; the random streams and the data order cannot carry over.
    seed_rank(seed + start.step, rank)
    if not epoch_done:
        loader.resume_from(loader.position_after(start.epoch, start.batches_done))
    if rank == 0:
        warnings.warn(
            f"resuming {folder.name} (written by {saved.get('world_size', '?')} workers x "
            f"{max(1, saved.get('loader_workers') or 0)} loader workers) on {world} x {loader.readers}: model and "
            "optimizer state are resharded; random streams are re-seeded"
            + (f"; epoch {start.epoch} continues after its batch {start.batches_done} in the new layout, so some of "
               "its samples may be seen twice or not at all (later epochs are exact)" if not epoch_done else ""))
    return start
