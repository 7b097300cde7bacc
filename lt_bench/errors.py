"""Errors that the suite raises on purpose, each naming the bad value, file or step."""


class LtBenchError(Exception):
    """Base class: an error the user can fix from its message alone."""


class ConfigError(LtBenchError, ValueError):
    """A configuration value is unknown or inconsistent (raised before any data is read)."""


class DataError(LtBenchError):
    """A dataset file is missing, malformed or inconsistent; the message names the file."""


class NonFiniteLossError(LtBenchError, FloatingPointError):
    """A training loss became NaN or infinite; the message names the stage, epoch and batch."""


class CheckpointError(LtBenchError):
    """A checkpoint is missing, unreadable or does not fit the current run."""
