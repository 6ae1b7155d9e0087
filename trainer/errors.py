"""The one error type the user sees from the trainer: a readable message, no traceback."""


class ConfigError(ValueError):
    """A configuration problem: names the key, the bad value and what is allowed."""
