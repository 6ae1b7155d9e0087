"""The exception types the data pipeline shows its users."""


class DataError(Exception):
    """A problem with the data a user pointed us at (missing dataset, corrupt file, bad manifest).

    The message is one readable line: what went wrong, where, and how to fix it. Callers (the CLI,
    the trainer) print it as is, so bad input never surfaces as a bare library traceback.
    """


class NotFound(DataError):
    """What was asked for is not there (no such file or object, no shard set at a location; its bucket or folder
    may exist): writing it is the fix. Any other DataError (access denied, an unreachable store, a corrupt file)
    is not, so a caller adds a "write the shards" hint to this one only."""
