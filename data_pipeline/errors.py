"""The one exception type the data pipeline shows its users."""


class DataError(Exception):
    """A problem with the data a user pointed us at (missing dataset, corrupt file, bad manifest).

    The message is one readable line: what went wrong, where, and how to fix it. Callers (the CLI,
    the trainer) print it as is, so bad input never surfaces as a bare library traceback.
    """
