"""Errors that the suite raises on purpose, each naming the bad value, file or step."""


class LtBenchError(Exception):
    """Base class: an error the user can fix from its message alone."""


class ConfigError(LtBenchError, ValueError):
    """A configuration value is unknown or inconsistent (raised before any data is read)."""


class DataError(LtBenchError):
    """A dataset file is missing, malformed or inconsistent; the message names the file."""


class NonFiniteLossError(LtBenchError, FloatingPointError):
    """A training loss became NaN or infinite; the message names the stage, epoch and batch."""


class StorageError(LtBenchError, OSError):
    """A file could not be written (a full disk, a quota, a read-only file system); the message
    names the file and the system's reason."""

    exit_status = 74   # EX_IOERR


class CheckpointError(LtBenchError):
    """A checkpoint is missing, unreadable or does not fit the current run."""


def error_text(err: BaseException) -> str:
    """The message of ``err`` for the user.  An error raised in a DataLoader worker reaches the
    main process as ``Caught DataError in DataLoader worker process 0. Original Traceback ...``:
    keep only the worker's own message, not the traceback around it."""
    text = str(err)
    if text.startswith("Caught ") and "\nOriginal Traceback" in text:
        marker = f"{type(err).__module__}.{type(err).__qualname__}: "
        at = text.rfind(marker)
        if at >= 0:
            return f"{text[at + len(marker):].rstrip()} (in a DataLoader worker)"
    return text


def check_one_of(what: str, value, valid) -> None:
    """ConfigError naming ``what``, the value and the valid ones, unless ``value`` is valid."""
    valid = list(valid)
    if value not in valid:
        raise ConfigError(f"unknown {what} {value!r}; valid: {', '.join(map(str, valid))}")


def check_positive_int(what: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{what} must be a positive integer, got {value!r}")
