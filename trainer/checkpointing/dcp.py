"""Writing and reading one checkpoint folder with torch.distributed.checkpoint (DCP).

A checkpoint folder holds three kinds of file, each written by this module only:
* the DCP shards of a `Stateful` application state (every rank writes its own `__<rank>_0.distcp`,
  rank 0 adds `.metadata`); DCP reshards on load, so a run can resume on another number of workers;
* `rank_<r>.pt`, one per rank: what differs per rank (its RNG states, its loader position);
* `trainer_state.json`, written by rank 0: the format version, progress counters and the config.
What goes into each is the training state's business (`trainer.training.state.TrainState`).

Every rank writes into a local temporary folder that `ray.train.report` then uploads into one checkpoint
directory of the run's storage; a failed write removes its folder. Loading never unpickles arbitrary
objects (`trainer.checkpointing.safe_load`).
"""

from __future__ import annotations

import errno
import json
import shutil
import tempfile
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.api import CheckpointException  # a BaseException, not an Exception
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)
from torch.distributed.checkpoint.stateful import Stateful

from trainer.checkpointing.safe_load import SafeLoadPlanner, SafeReader
from trainer.errors import CheckpointError, describe

FORMAT = 2  # bump when what a checkpoint holds changes: a checkpoint of another format is refused in one line
TRAINER_STATE_FILE = "trainer_state.json"
APP_STATE_KEY = "train"  # the DCP key of the training state: its model weights are `train.model.weights.*`


class ModuleState(Stateful):
    """A module (sharded, wrapped or plain) and its optimizer as one DCP entry, resharded to the layout on load."""

    def __init__(self, module: nn.Module, optimizer: torch.optim.Optimizer):
        self.module, self.optimizer = module, optimizer

    def state_dict(self) -> dict:
        weights, optimizer = get_state_dict(self.module, self.optimizer)
        return {"weights": weights, "optimizer": optimizer}

    def load_state_dict(self, state: dict) -> None:
        set_state_dict(self.module, self.optimizer, model_state_dict=state["weights"],
                       optim_state_dict=state["optimizer"])


def rank_state_file(rank: int) -> str:
    return f"rank_{rank}.pt"


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def disk_full(err: BaseException) -> bool:
    """ENOSPC anywhere in the error, including DCP's per-rank failure wrappers."""
    return getattr(err, "errno", None) == errno.ENOSPC or "No space left on device" in str(err)


def write_checkpoint(app_state, meta: dict, rank_state: dict, parent: str | None = None) -> Path:
    """Write this rank's share of a checkpoint into a fresh local folder (under `parent`, default the temp
    folder) and return it. `app_state` is a DCP `Stateful`; `meta` (rank 0) gets the format version added.
    On failure nothing is left behind and a CheckpointError says why."""
    rank = _rank()
    folder = Path(tempfile.mkdtemp(prefix="seqjepa-ckpt-", dir=parent))
    try:
        dcp.save({APP_STATE_KEY: app_state}, checkpoint_id=str(folder))
        torch.save(rank_state, folder / rank_state_file(rank))
        if rank == 0:
            (folder / TRAINER_STATE_FILE).write_text(json.dumps({"format": FORMAT, **meta}, indent=2))
    except (Exception, CheckpointException) as err:  # noqa: BLE001 - remove the partial folder, say what happened
        # torch.save reports a full disk as "unexpected pos ..." without the errno: look at the disk too.
        full = disk_full(err) or shutil.disk_usage(folder).free < 1 << 20
        shutil.rmtree(folder, ignore_errors=True)
        where = f"step {meta.get('step')} checkpoint in {folder.parent}"
        if full:
            raise CheckpointError(f"no space left on the device writing the {where}; the previous checkpoint is "
                                  "intact: free space (or point TMPDIR at a larger disk) and run the same command "
                                  "again to resume") from None
        raise CheckpointError(f"cannot write the {where}: {type(err).__name__}: {err}") from err
    return folder


def read_checkpoint(folder: str | Path, app_state) -> None:
    """Restore the `Stateful` `app_state` in place from `folder`, resharding to this group's layout. A damaged
    checkpoint raises a CheckpointError naming it."""
    try:
        dcp.load({APP_STATE_KEY: app_state}, storage_reader=SafeReader(str(folder)), planner=SafeLoadPlanner())
    except (Exception, CheckpointException) as err:  # noqa: BLE001 - DCP wraps every rank's failure
        raise CheckpointError(f"checkpoint {folder} is unreadable ({describe(err)})") from None


def read_rank_state(folder: str | Path, rank: int) -> dict | None:
    """This rank's file of the checkpoint, or None when it has none for this rank."""
    path = Path(folder) / rank_state_file(rank)
    if not path.is_file():
        return None
    try:
        return torch.load(path, weights_only=True)  # tensors and plain values only: no code from the file
    except Exception as err:  # noqa: BLE001
        raise CheckpointError(f"checkpoint file {path} is unreadable ({describe(err)})") from None


def read_meta(folder: str | Path) -> dict:
    """`trainer_state.json` as written, whatever its format (a CheckpointError if it cannot be read)."""
    path = Path(folder) / TRAINER_STATE_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"checkpoint file {path} is unreadable ({describe(err)})") from None


def check_format(meta: dict, where: str | Path) -> dict:
    """`meta` itself if this version of the code reads its format; else one CheckpointError saying so."""
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {where} has format {meta.get('format', 1)}, but this version of seq-jepa "
                              f"reads format {FORMAT} only; train afresh under another run.name, or use the version "
                              "of the code that wrote it")
    return meta


def read_trainer_state(folder: str | Path) -> dict:
    """The checkpoint's format-checked `trainer_state.json`: progress counters, world size and config."""
    return check_format(read_meta(folder), folder)


def load_model_weights(folder: str | Path, model: nn.Module) -> None:
    """Load a checkpoint's model weights (online and target encoders included) into a plain, unsharded model
    in this process; DCP reassembles the shards that every rank wrote."""
    read_trainer_state(folder)
    state = {APP_STATE_KEY: {"model": {"weights": model.state_dict()}}}
    with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
        warnings.filterwarnings("ignore", message=".*load in a single process.*")
        dcp.load(state, storage_reader=SafeReader(str(folder)), planner=SafeLoadPlanner(),
                 no_dist=not (dist.is_available() and dist.is_initialized()))
    model.load_state_dict(state[APP_STATE_KEY]["model"]["weights"])


def full_encoder_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The online encoder's full (unsharded) weights, collective over ranks; torchvision key names."""
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=False))
    return {k[len("encoder."):]: v.detach().cpu().clone() for k, v in full.items() if k.startswith("encoder.")}
