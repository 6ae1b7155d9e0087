"""Checkpoints with torch.distributed.checkpoint (DCP), reported through Ray Train.

Every rank writes its own shard files and `rank_<r>.pt` (its RNG states and loader position) into a
local temporary folder; `ray.train.report` uploads all ranks' folders into one checkpoint directory of
the run's storage (rank 0 adds `.metadata` and `trainer_state.json`). Ray Train registers a
checkpoint only once every rank's upload succeeded, so a resume never sees a partial one; `is_complete`
tells a reader of the storage folder the same. DCP reshards on load, so a run can resume on another
number of workers. Loading never unpickles arbitrary objects (`trainer.safe_load`).
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
from torch.distributed.checkpoint.api import CheckpointException  # a BaseException, not an Exception
from torch import nn
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict, get_state_dict,
                                                     set_state_dict)

from trainer.errors import CheckpointError, describe
from trainer.safe_load import SafeLoadPlanner, SafeReader

TRAINER_STATE_FILE = "trainer_state.json"  # rank 0: epoch, step, world size, config (written last by rank 0)


def rank_state_file(rank: int) -> str:
    return f"rank_{rank}.pt"  # one per rank: its RNG states and loader position


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _state(parts: dict[str, tuple[nn.Module, torch.optim.Optimizer]]) -> dict:
    state = {}
    for name, (module, optimizer) in parts.items():
        model_sd, optim_sd = get_state_dict(module, optimizer)
        state[name] = {"model": model_sd, "optim": optim_sd}
    return state


def disk_full(err: BaseException) -> bool:
    """ENOSPC anywhere in the error, including DCP's per-rank failure wrappers."""
    return getattr(err, "errno", None) == errno.ENOSPC or "No space left on device" in str(err)


def save_checkpoint(parts: dict[str, tuple[nn.Module, torch.optim.Optimizer]], trainer_state: dict,
                    rank_state: dict, parent: str | None = None) -> Path:
    """Write this rank's share of the checkpoint into a fresh local folder (under `parent`, default the
    temp folder) and return it. On failure nothing is left behind and a CheckpointError says why."""
    rank = _rank()
    folder = Path(tempfile.mkdtemp(prefix="seqjepa-ckpt-", dir=parent))
    try:
        dcp.save(_state(parts), checkpoint_id=str(folder))
        torch.save(rank_state, folder / rank_state_file(rank))
        if rank == 0:
            (folder / TRAINER_STATE_FILE).write_text(json.dumps(trainer_state, indent=2))
    except (Exception, CheckpointException) as err:  # noqa: BLE001 - remove the partial folder, say what happened
        # torch.save reports a full disk as "unexpected pos ..." without the errno: look at the disk too.
        full = disk_full(err) or shutil.disk_usage(folder).free < 1 << 20
        shutil.rmtree(folder, ignore_errors=True)
        where = f"step {trainer_state.get('step')} checkpoint in {folder.parent}"
        if full:
            raise CheckpointError(f"no space left on the device writing the {where}; the previous checkpoint is "
                                  "intact: free space (or point TMPDIR at a larger disk) and run the same command "
                                  "again to resume") from None
        raise CheckpointError(f"cannot write the {where}: {type(err).__name__}: {err}") from err
    return folder


def is_complete(folder: str | Path) -> bool:
    """Every rank's files and rank 0's state are there (an interrupted upload leaves some out)."""
    folder = Path(folder)
    try:
        state = read_trainer_state(folder)
    except CheckpointError:
        return False
    world = int(state.get("world_size", 0))  # 0: written before rank files existed
    return (folder / ".metadata").is_file() and all((folder / rank_state_file(r)).is_file() for r in range(world))


def load_checkpoint(folder: str | Path, parts: dict[str, tuple[nn.Module, torch.optim.Optimizer]]) -> dict:
    """Restore modules and optimizers in place from `folder` (resharding to this group's layout); return
    the saved trainer state. A damaged checkpoint raises a CheckpointError naming it."""
    folder = Path(folder)
    trainer_state = read_trainer_state(folder)
    state = _state(parts)
    try:
        dcp.load(state, storage_reader=SafeReader(str(folder)), planner=SafeLoadPlanner())
    except (Exception, CheckpointException) as err:  # noqa: BLE001 - DCP wraps every rank's failure
        raise CheckpointError(f"checkpoint {folder} is unreadable ({describe(err)})") from None
    for name, (module, optimizer) in parts.items():
        set_state_dict(module, optimizer, model_state_dict=state[name]["model"],
                       optim_state_dict=state[name]["optim"])
    return trainer_state


def read_rank_state(folder: str | Path, rank: int) -> dict | None:
    """This rank's RNG states and loader position, or None when the checkpoint has no file for it."""
    path = Path(folder) / rank_state_file(rank)
    if not path.is_file():
        return None
    try:
        return torch.load(path, weights_only=True)  # tensors and plain values only: no code from the file
    except Exception as err:  # noqa: BLE001
        raise CheckpointError(f"checkpoint file {path} is unreadable ({describe(err)})") from None


def latest_checkpoint(location: str | Path) -> Path:
    """A checkpoint folder as given, or the newest complete `checkpoint_*` folder of a run folder."""
    folder = Path(location).expanduser()
    if (folder / TRAINER_STATE_FILE).is_file():
        return folder
    found = checkpoints_of_run(folder)
    if not found:
        raise FileNotFoundError(f"{folder} is neither a checkpoint (no {TRAINER_STATE_FILE}) nor a run folder "
                                "holding complete checkpoint_* folders; pass a run folder under run.storage_path")
    return found[-1]


def checkpoints_of_run(run_folder: str | Path) -> list[Path]:
    """The run's complete checkpoints, oldest first (Ray Train names them checkpoint_<timestamp>)."""
    return sorted(p for p in Path(run_folder).glob("checkpoint_*") if p.is_dir() and is_complete(p))


def read_trainer_state(folder: str | Path) -> dict:
    path = Path(folder) / TRAINER_STATE_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"checkpoint file {path} is unreadable ({describe(err)})") from None


def load_model_weights(folder: str | Path, model: nn.Module) -> None:
    """Load the seq-JEPA weights (online and target encoders included) of a checkpoint into a plain,
    unsharded model in this process; DCP reassembles the shards that every rank wrote."""
    state = {"seq_jepa": {"model": model.state_dict()}}
    with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
        warnings.filterwarnings("ignore", message=".*load in a single process.*")
        dcp.load(state, storage_reader=SafeReader(str(folder)), planner=SafeLoadPlanner(),
                 no_dist=not (dist.is_available() and dist.is_initialized()))
    model.load_state_dict(state["seq_jepa"]["model"])


def full_encoder_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The online encoder's full (unsharded) weights, collective over ranks; torchvision key names."""
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=False))
    return {k[len("encoder."):]: v.detach().cpu().clone() for k, v in full.items() if k.startswith("encoder.")}
