"""The errors the user sees from the trainer as one `error:` line (no traceback), and the CLI boundary."""

from __future__ import annotations

import sys
from typing import Callable


class ConfigError(ValueError):
    """A configuration problem: names the key, the bad value and what is allowed."""


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written (disk full) or read (damaged): says which one and what to do."""


class TrackingError(RuntimeError):
    """The MLflow tracking server cannot be reached when a run starts."""


class TrainingDiverged(FloatingPointError):
    """The training loss became NaN or infinite: names the step; nothing of it was checkpointed."""


def exit_code_of(run: Callable[[], int]) -> int:
    """`run()`'s exit code; a bad config or bad data (the user's to fix) is one `error:` line and exit code 2."""
    from data_pipeline import DataError

    user_errors = (ConfigError, DataError, CheckpointError, TrackingError, TrainingDiverged)
    try:
        return run()
    except user_errors as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - a worker's user-facing error arrives wrapped by Ray Train
        cause = _worker_cause(err, user_errors)
        if cause is None:
            raise
        print(f"error: {cause}", file=sys.stderr)
        return 2


def _worker_cause(err: Exception, kinds: tuple[type, ...]) -> BaseException | None:
    """The first user-facing error among the worker failures of a Ray Train `WorkerGroupError`."""
    for failure in getattr(err, "worker_failures", {}).values():
        for candidate in (failure, getattr(failure, "cause", None), failure.__cause__):
            if isinstance(candidate, kinds):
                return _plain(candidate)
    return None


def _plain(err: BaseException) -> str:
    """The message without the worker traceback Ray appends to a re-raised error."""
    return str(err.args[0]) if err.args else str(err)


def describe(err: BaseException) -> str:
    """`Type: first line of the message`, credentials in URLs masked. DCP's CheckpointException only
    lists the ranks that failed: the first rank's own error is described instead."""
    from trainer.redact import redact_text

    failures = getattr(err, "failures", None)
    if failures:
        wrapped = next(iter(failures.values()))
        err = getattr(wrapped, "exc", wrapped)
    lines = redact_text(str(err)).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"[:500]
