"""The training state: everything a step changes and a checkpoint holds, saved and restored in one place.

* Sharded over the ranks (DCP, resharded on load): the model (online encoder, EMA target, aggregator,
  predictor), its optimizer, the online probes and their optimizer: `state_dict`/`load_state_dict`.
* Per rank (`rank_<r>.pt`): the torch, CUDA and Python RNG states (dropout draws from the torch
  generator), the training loader's position inside the epoch, and the half-filled logging window's sums.
* Once (`trainer_state.json`): epoch, step, batches done in the epoch, world size, loader workers, config.

The LR and EMA schedules are functions of the step; the loader workers' random streams are derived from
(seed, epoch, rank, worker, batch), so the position alone reproduces them. A restored run continues with
the batch after the saved step, so its loss curve and final weights match an uninterrupted run's.
"""

from __future__ import annotations

import math
import random
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from torch.distributed.checkpoint.stateful import Stateful

from data_pipeline import SequenceLoader, StreamPosition
from trainer.checkpointing.dcp import (
    ModuleState,
    check_format,
    read_checkpoint,
    read_meta,
    read_rank_state,
    read_trainer_state,
    write_checkpoint,
)
from trainer.checkpointing.run_folders import checkpoints_of_run
from trainer.errors import CheckpointError
from trainer.metric_names import TRAIN_LOSS
from trainer.training.sums import NamedSums


def seed_rank(seed: int, rank: int) -> None:
    """After the (shared) initialisation: each rank draws its own dropout masks."""
    torch.manual_seed(seed * 1009 + rank + 1)
    random.seed(seed * 1009 + rank + 1)


@dataclass
class MetricWindow:
    """This rank's per-step metrics since the last logged step (kept across a mid-epoch checkpoint).

    Summed by name on the device in float64 (for the loss: what Python's float sum of the float32 losses gives,
    bit for bit), so a step never waits for the device; the logging window reads their means once. Whether a
    step's loss was not finite is kept beside them (a count, and the first such step), never read per step.
    """

    sums: NamedSums = field(default_factory=NamedSums)
    steps: int = 0
    nonfinite: torch.Tensor | float = 0.0  # steps whose loss was not finite
    first_nonfinite: torch.Tensor | None = None  # the first of them (inf: none)

    def add_step(self, step: int, metrics: dict[str, torch.Tensor]) -> None:
        """`metrics` of step `step` (device scalars, `train/loss` among them)."""
        for name, value in metrics.items():
            self.sums.add(name, value)
        bad = ~torch.isfinite(metrics[TRAIN_LOSS])
        self.nonfinite = self.nonfinite + bad.double()
        this = torch.where(bad, float(step), math.inf).double()
        self.first_nonfinite = this if self.first_nonfinite is None else torch.minimum(self.first_nonfinite, this)
        self.steps += 1

    def means(self) -> dict[str, torch.Tensor]:
        return {name: value / self.steps for name, value in self.sums.values.items()}

    def reset(self) -> None:
        self.sums, self.steps = NamedSums(self.sums.device), 0
        self.nonfinite, self.first_nonfinite = 0.0, None

    def to_state(self) -> dict:
        return {"steps": self.steps, "sums": self.sums.to_state()}

    @classmethod
    def from_state(cls, state: dict | list, device: torch.device) -> MetricWindow:
        if isinstance(state, list):  # a checkpoint of version 0.1: [loss sum, steps]
            state = {"steps": state[1], "sums": {TRAIN_LOSS: state[0]}}
        return cls(NamedSums.from_state(state["sums"], device), int(state["steps"]))


@dataclass
class TrainState(Stateful):
    """What a step changes. Every field is in `CHECKPOINTED`, under the part of a checkpoint that holds it."""

    model: torch.nn.Module  # may be sharded (FSDP2) or wrapped (DDP)
    optimizer: torch.optim.Optimizer
    probes: torch.nn.Module
    probe_optimizer: torch.optim.Optimizer
    loader: SequenceLoader  # the training loader (its position is per-rank state)
    device: torch.device
    epoch: int = 0  # the epoch in progress
    step: int = 0  # optimizer steps taken
    batches_done: int = 0  # batches of `epoch` trained
    window: MetricWindow = field(init=False)  # the logging window's sums so far, on the device
    restored_from: Path | None = None  # the checkpoint this state came from; None: a fresh start

    # Which part of a checkpoint holds each field: sharded over the ranks through DCP (`_sharded`), per rank
    # (`rank_state`, read back in `_continue_after`), once (the `meta` of `save`, read back in `_continue_after`),
    # or none. A new field goes here and into the methods of its part (README, "Extending").
    CHECKPOINTED: ClassVar[dict[str, tuple[str, ...]]] = {
        "sharded": ("model", "optimizer", "probes", "probe_optimizer"),
        "per_rank": ("loader", "window"),  # the loader's position in the epoch
        "once": ("epoch", "step", "batches_done"),
        "not_saved": ("device", "restored_from"),
    }

    def __post_init__(self):
        self.window = MetricWindow(NamedSums(self.device))  # sums where the steps' metrics are

    # -- the sharded part, through DCP ------------------------------------------------------------------

    def _sharded(self) -> dict[str, ModuleState]:
        return {"model": ModuleState(self.model, self.optimizer),
                "probes": ModuleState(self.probes, self.probe_optimizer)}

    def state_dict(self) -> dict:
        return {name: part.state_dict() for name, part in self._sharded().items()}

    def load_state_dict(self, state: dict) -> None:
        for name, part in self._sharded().items():
            part.load_state_dict(state[name])

    # -- the per-rank part -------------------------------------------------------------------------------

    def rank_state(self) -> dict:
        state = {"torch_rng": torch.get_rng_state(), "python_rng": random.getstate(),
                 "position": self.loader.position.to_dict(), "window": self.window.to_state()}
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return state

    def _load_rng(self, state: dict) -> None:
        torch.set_rng_state(state["torch_rng"])
        version, internal, gauss = state["python_rng"]
        random.setstate((version, tuple(internal), gauss))
        if self.device.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)

    # -- saving and restoring ----------------------------------------------------------------------------

    def save(self, config: dict, world: int, epoch_done: bool) -> Path:
        """This rank's share of a checkpoint of the state now, in a fresh local folder (see trainer.checkpointing)."""
        meta = {"epoch": self.epoch, "step": self.step, "batches_done": self.batches_done, "epoch_done": epoch_done,
                "world_size": world, "loader_workers": self.loader.num_workers, "config": config}
        return write_checkpoint(self, meta, self.rank_state())

    def restore(self, checkpoint: Path, seed: int, rank: int, world: int) -> None:
        """Load `checkpoint` (or, if it is damaged, the newest older one of the same run folder) and set the RNG
        and the loader so training continues with the batch after the saved step."""
        try:
            meta = read_meta(checkpoint)
        except CheckpointError:
            meta = None  # damaged: the loop below says so and falls back to an older checkpoint
        if meta is not None:
            check_format(meta, checkpoint)  # another version's format: one line, no fallback
        for candidate in _candidates(checkpoint):
            try:
                meta = read_trainer_state(candidate)
                read_checkpoint(candidate, self)
            except CheckpointError as err:
                if rank == 0:
                    warnings.warn(f"{err}; trying the run's previous checkpoint")
                continue
            self._continue_after(candidate, meta, seed, rank, world)
            if rank == 0:
                print(f"[seq-jepa] resumed from {candidate} (epoch {self.epoch}, step {self.step}, "
                      f"{self.batches_done} batches into the epoch)", flush=True)
            return
        raise CheckpointError(f"no checkpoint of {checkpoint.parent} could be read (the newest is {checkpoint}); "
                              "move the damaged checkpoint_* folders out of the run folder, or start afresh under "
                              "another run.name")

    def _continue_after(self, folder: Path, meta: dict, seed: int, rank: int, world: int) -> None:
        epoch_done = meta["epoch_done"]
        self.epoch = meta["epoch"] + 1 if epoch_done else meta["epoch"]
        self.step = meta["step"]
        self.batches_done = 0 if epoch_done else meta["batches_done"]
        self.restored_from = folder
        mine = read_rank_state(folder, rank) if meta["world_size"] == world else None
        position = StreamPosition.from_dict(mine["position"]) if mine else None
        if mine is not None and len(position.done_chunks) == self.loader.readers:
            self._load_rng(mine)
            if not epoch_done:
                self.loader.resume_from(position)
                self.window = MetricWindow.from_state(mine["window"], self.device)
            return
        # Another layout: the weights and optimizer reshard; the random streams and the data order cannot carry over.
        seed_rank(seed + self.step, rank)
        if not epoch_done:
            self.loader.resume_from(self.loader.position_after(self.epoch, self.batches_done))
        if rank == 0:
            warnings.warn(
                f"resuming {folder.name} (written by {meta['world_size']} workers x "
                f"{max(1, meta['loader_workers'] or 0)} loader workers) on {world} x {self.loader.readers}: model and "
                "optimizer state are resharded; random streams are re-seeded"
                + (f"; epoch {self.epoch} continues after its batch {self.batches_done} in the new layout, so some of "
                   "its samples may be seen twice or not at all (later epochs are exact)" if not epoch_done else ""))


def _candidates(checkpoint: Path) -> list[Path]:
    """The checkpoint Ray Train picked, then the run's older complete ones, newest first (local storage)."""
    older = [p for p in checkpoints_of_run(checkpoint.parent) if p.name < checkpoint.name]
    return [checkpoint, *reversed(older)]
