"""Where a checkpoint to evaluate lives: a local folder or an s3:// URL, a checkpoint or a run folder.

Ray Train keeps a run's checkpoints as `<run.storage_path>/<run name>/checkpoint_<timestamp>/`, each a
flat folder (DCP shard files, `.metadata`, `trainer_state.json`), on local disk or in S3. S3 goes through
the project's storage layer (`data_pipeline.storage`: one boto3 client per process, failures as one
`DataError` line). An S3 checkpoint is downloaded to a temporary folder only when its weights are needed:
its config and step come from `trainer_state.json` alone, and a feature-cache hit needs no weights.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from data_pipeline import DataError, S3Options, S3Store, is_remote, join
from trainer.checkpointing.dcp import TRAINER_STATE_FILE, check_format, read_trainer_state
from trainer.checkpointing.run_folders import checkpoints_of_run, latest_checkpoint

Location = str | Path  # a local path, or an s3:// URL


def locate(location: Location, s3: S3Options) -> Location:
    """The checkpoint folder `location` names: itself, or the newest `checkpoint_*` folder of a run folder."""
    if not is_remote(location):
        return latest_checkpoint(location)
    return checkpoints(location, s3)[-1]


def checkpoints(location: Location, s3: S3Options) -> list[Location]:
    """Every complete checkpoint of a run folder, oldest first; a checkpoint folder: itself alone."""
    if not is_remote(location):
        folder = latest_checkpoint(location)  # the one named, or the run's newest (a clear error if none)
        return [folder] if folder == Path(location).expanduser() else checkpoints_of_run(Path(location).expanduser())
    url, store = str(location).rstrip("/"), S3Store(s3)
    if store.exists(join(url, TRAINER_STATE_FILE)):
        return [url]
    # Ray Train names checkpoints checkpoint_<timestamp>: the name order is the time order.
    found = [folder for folder in store.list_folders(url)
             if folder.rsplit("/", 1)[-1].startswith("checkpoint_") and store.exists(join(folder, TRAINER_STATE_FILE))]
    if not found:
        raise FileNotFoundError(f"{url} is neither a checkpoint (no {TRAINER_STATE_FILE}) nor a run folder holding "
                                f"checkpoint_* folders (endpoint {s3.describe_endpoint()})")
    return found


def read_state(checkpoint: Location, s3: S3Options) -> dict:
    """The checkpoint's format-checked `trainer_state.json` (its config, epoch and step)."""
    if not is_remote(checkpoint):
        return read_trainer_state(checkpoint)
    return check_format(json.loads(S3Store(s3).read_bytes(join(checkpoint, TRAINER_STATE_FILE))), checkpoint)


def fingerprint(checkpoint: Location, s3: S3Options) -> str:
    """A digest of the checkpoint's identity: its location and every file's size (and local modification time),
    so a checkpoint rewritten in place gets a new one."""
    if is_remote(checkpoint):
        files = sorted((url.rsplit("/", 1)[-1], size) for url, size in S3Store(s3).list_sizes(checkpoint).items())
        where = str(checkpoint)
    else:
        folder = Path(checkpoint).resolve()
        files = sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
                       for p in folder.rglob("*") if p.is_file())
        where = str(folder)
    return hashlib.sha256(json.dumps([where, files]).encode()).hexdigest()


@contextlib.contextmanager
def local_copy(checkpoint: Location, s3: S3Options) -> Iterator[Path]:
    """The checkpoint as a local folder: itself, or an S3 checkpoint downloaded to a temporary folder (removed
    on exit)."""
    if not is_remote(checkpoint):
        yield Path(checkpoint)
        return
    store = S3Store(s3)
    with tempfile.TemporaryDirectory(prefix="seqjepa-eval-ckpt-") as tmp:
        for url, size in store.list_sizes(checkpoint).items():
            target = Path(tmp) / url.rsplit("/", 1)[-1]
            with store.open(url) as source, open(target, "wb") as out:
                shutil.copyfileobj(source, out, 1 << 20)
            if target.stat().st_size != size:
                raise DataError(f"downloading {url} gave {target.stat().st_size} bytes, the store lists {size}; retry")
        yield Path(tmp)
