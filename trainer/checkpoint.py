"""Checkpoints with torch.distributed.checkpoint (DCP), reported through Ray Train.

Every rank writes its own shard files into a local temporary folder; `ray.train.report` uploads all
ranks' folders into one checkpoint directory of the run's storage (rank 0 adds `.metadata` and
`trainer_state.json`). DCP reshards on load, so a run can resume on another number of workers.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict, get_state_dict,
                                                     set_state_dict)

TRAINER_STATE_FILE = "trainer_state.json"


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _state(parts: dict[str, tuple[nn.Module, torch.optim.Optimizer]]) -> dict:
    state = {}
    for name, (module, optimizer) in parts.items():
        model_sd, optim_sd = get_state_dict(module, optimizer)
        state[name] = {"model": model_sd, "optim": optim_sd}
    return state


def save_checkpoint(parts: dict[str, tuple[nn.Module, torch.optim.Optimizer]], trainer_state: dict) -> Path:
    """Write this rank's share of the checkpoint into a fresh local folder and return it."""
    folder = Path(tempfile.mkdtemp(prefix="seqjepa-ckpt-"))
    dcp.save(_state(parts), checkpoint_id=str(folder))
    if _rank() == 0:
        (folder / TRAINER_STATE_FILE).write_text(json.dumps(trainer_state, indent=2))
    return folder


def load_checkpoint(folder: str | Path, parts: dict[str, tuple[nn.Module, torch.optim.Optimizer]]) -> dict:
    """Restore modules and optimizers in place from `folder`; return the saved trainer state."""
    folder = Path(folder)
    state = _state(parts)
    dcp.load(state, checkpoint_id=str(folder))
    for name, (module, optimizer) in parts.items():
        set_state_dict(module, optimizer, model_state_dict=state[name]["model"],
                       optim_state_dict=state[name]["optim"])
    return read_trainer_state(folder)


def latest_checkpoint(location: str | Path) -> Path:
    """A checkpoint folder as given, or the newest `checkpoint_*` folder of a run folder."""
    folder = Path(location).expanduser()
    if (folder / TRAINER_STATE_FILE).is_file():
        return folder
    # Ray Train names checkpoints checkpoint_<timestamp>: the name order is the time order.
    found = sorted(p for p in folder.glob("checkpoint_*") if (p / TRAINER_STATE_FILE).is_file())
    if not found:
        raise FileNotFoundError(f"{folder} is neither a checkpoint (no {TRAINER_STATE_FILE}) nor a run folder "
                                "holding checkpoint_* folders; pass a run folder under run.storage_path")
    return found[-1]


def read_trainer_state(folder: str | Path) -> dict:
    return json.loads((Path(folder) / TRAINER_STATE_FILE).read_text())


def load_model_weights(folder: str | Path, model: nn.Module) -> None:
    """Load the seq-JEPA weights (online and target encoders included) of a checkpoint into a plain,
    unsharded model in this process; DCP reassembles the shards that every rank wrote."""
    state = {"seq_jepa": {"model": model.state_dict()}}
    with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
        warnings.filterwarnings("ignore", message=".*load in a single process.*")
        dcp.load(state, checkpoint_id=str(folder), no_dist=not (dist.is_available() and dist.is_initialized()))
    model.load_state_dict(state["seq_jepa"]["model"])


def full_encoder_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The online encoder's full (unsharded) weights, collective over ranks; torchvision key names."""
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=False))
    return {k[len("encoder."):]: v.detach().cpu().clone() for k, v in full.items() if k.startswith("encoder.")}
