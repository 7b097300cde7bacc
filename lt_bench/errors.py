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


def check_one_of(what: str, value, valid) -> None:
    """ConfigError naming ``what``, the value and the valid ones, unless ``value`` is valid."""
    valid = list(valid)
    if value not in valid:
        raise ConfigError(f"unknown {what} {value!r}; valid: {', '.join(map(str, valid))}")


def check_positive_int(what: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{what} must be a positive integer, got {value!r}")
