"""A run's checkpoints on local disk: Ray Train keeps them as `<storage>/<run name>/checkpoint_<timestamp>/`.

Ray Train registers a checkpoint only once every rank's upload succeeded; `is_complete` tells a reader of
the storage folder the same from the files alone (an interrupted upload leaves some out).
"""

from __future__ import annotations

from pathlib import Path

from trainer.checkpointing.dcp import TRAINER_STATE_FILE, rank_state_file, read_meta
from trainer.errors import CheckpointError


def is_complete(folder: str | Path) -> bool:
    """Every rank's files and rank 0's state are there."""
    folder = Path(folder)
    try:
        world = int(read_meta(folder).get("world_size", 0))
    except CheckpointError:
        return False
    return (world >= 1 and (folder / ".metadata").is_file()
            and all((folder / rank_state_file(r)).is_file() for r in range(world)))


def checkpoints_of_run(run_folder: str | Path) -> list[Path]:
    """The run's complete checkpoints, oldest first (Ray Train names them checkpoint_<timestamp>)."""
    return sorted(p for p in Path(run_folder).glob("checkpoint_*") if p.is_dir() and is_complete(p))


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
