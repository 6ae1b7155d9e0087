"""Extracted features kept on disk, so evaluating a checkpoint again with other probe settings skips extraction.

One file per (checkpoint, split, settings that change the features): `<data.cache_dir>/features/<key>.pt`,
the key a digest of the checkpoint's identity (location, every file's size and local modification time:
`trainer.checkpointing.source.fingerprint`), the split, the data settings, eval.seq_lens, the sample limit, the seed
that fixes the views, and whether the pass ran under bf16 on which device type. Probe settings (epochs,
lr, ...) are not part of it. An entry is written to a temporary file and renamed into place, so an
interrupted run never leaves a half-written one; an unreadable entry counts as missing.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

import torch

from trainer.config import Config, to_dict
from trainer.evaluation.features import SplitFeatures

FORMAT = 1  # bump when what extract_features computes changes: older entries then stop matching
_NOT_FEATURES = ("cache_dir", "loader_workers", "prepare", "source_dir", "samples_per_shard")  # where, not what


def entry_path(config: Config, checkpoint_id: str, split: str, limit: int | None, autocast: bool,
               device_type: str) -> Path:
    data = {k: v for k, v in to_dict(config)["data"].items() if k not in _NOT_FEATURES}
    key = {"format": FORMAT, "checkpoint": checkpoint_id, "split": split, "data": data,
           "seq_lens": config.eval.seq_lens, "limit": limit, "seed": config.train.seed, "bf16": autocast,
           "device": device_type}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return Path(os.path.expanduser(config.data.cache_dir)) / "features" / f"{digest}.pt"


def load(path: Path) -> tuple[SplitFeatures, dict] | None:
    """(features, info) of a cache entry, or None if there is none or it cannot be read."""
    if not path.is_file():
        return None
    try:
        entry = torch.load(path, map_location="cpu", weights_only=True)
        return SplitFeatures(**entry["features"]), entry["info"]
    except Exception as err:  # noqa: BLE001 - a broken entry is recomputed, never fatal
        print(f"[seq-jepa eval] ignoring unreadable feature cache {path} ({type(err).__name__}: {err})",
              file=sys.stderr)
        return None


def save(path: Path, features: SplitFeatures, info: dict) -> None:
    """Write atomically (a temporary file in the same folder, then a rename); a full or read-only disk only warns:
    the evaluation has its features either way."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".tmp")
        with os.fdopen(handle, "wb") as out:
            torch.save({"features": features.to_dict(), "info": info}, out)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would hide the entry from a shared cache's other users
        os.replace(tmp, path)
    except OSError as err:
        print(f"[seq-jepa eval] could not write the feature cache {path} ({err})", file=sys.stderr)
    finally:
        if tmp is not None and Path(tmp).exists():  # interrupted or failed before the rename
            Path(tmp).unlink()
