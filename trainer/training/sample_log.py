"""Which samples each step trained on, one JSON line per step and rank (`debug.sample_log`, written by the step
hook `trainer.training.hooks.SampleLog`).

A restored run replays the steps after its checkpoint and appends them again: a reader keeps the last
line of each (rank, step), which is the one the final weights went through.
"""

from __future__ import annotations

import json
from pathlib import Path


def read_sample_log(folder: str | Path) -> dict[tuple[int, int], tuple[int, list[str]]]:
    """{(rank, step): (epoch, keys)} with the last line of each (rank, step) winning."""
    steps = {}
    for path in sorted(Path(folder).glob("rank*.jsonl")):
        rank = int(path.stem[len("rank"):])
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:  # a line torn by a kill mid-write: that step is replayed on a later line
                continue
            steps[(rank, entry["step"])] = (entry["epoch"], entry["keys"])
    return steps
