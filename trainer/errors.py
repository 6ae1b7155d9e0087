"""The one error type the user sees from the trainer: a readable message, no traceback."""

from __future__ import annotations

import sys
from typing import Callable


class ConfigError(ValueError):
    """A configuration problem: names the key, the bad value and what is allowed."""


def exit_code_of(run: Callable[[], int]) -> int:
    """`run()`'s exit code; a bad config or bad data (the user's to fix) is one `error:` line and exit code 2."""
    from data_pipeline import DataError

    try:
        return run()
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
