"""Atomic file writes: a reader (or a crash) never sees a half-written file."""
from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, IO

from lt_bench.errors import StorageError

# mkstemp creates files readable by the owner only; results and plots should be as readable
# as any file the user creates (the umask decides), so we apply it explicitly.
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Write through ``write(file)`` to a temporary file beside ``path``, fsync, then rename.
    An OSError on the way (a full disk) is a StorageError naming ``path``; ``path`` is untouched."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(f".{path.name}.*.tmp"):   # left by a writer that was killed
            if not _writer_alive(stale, path.name):
                stale.unlink(missing_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except OSError as err:
        _discard(tmp)
        if isinstance(err, StorageError):
            raise
        hint = " (free some space, then resume=true)" if err.errno in (errno.ENOSPC, errno.EDQUOT) else ""
        raise StorageError(f"cannot write {path}: {err.strerror or err}{hint}") from err
    except BaseException:
        _discard(tmp)
        raise
    return path


def _discard(tmp: str | None) -> None:
    if tmp is not None:
        try:
            Path(tmp).unlink(missing_ok=True)
        except OSError:
            pass


def file_digest(path: str | os.PathLike, algorithm: str) -> str:
    """Hex digest (``hashlib`` algorithm name) of a file, read in 1 MiB blocks."""
    import hashlib
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _writer_alive(tmp: Path, target: str) -> bool:
    """Is the process that made this temporary file (``.<target>.<pid>.<random>.tmp``) still
    running?  Names without a pid (older writers) count as stale."""
    import re
    match = re.match(rf"\.{re.escape(target)}\.(\d+)\.", tmp.name)
    if match is None:
        return False
    pid = int(match.group(1))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """An exclusive lock on a run folder (``<run>/.lock``, holding the owner's pid), so that two
    runs never write one folder at once; the operating system releases it when the process ends."""

    def __init__(self, root: str | os.PathLike):
        self.path = Path(root) / ".lock"
        self.handle: IO[str] | None = None

    def acquire(self) -> "RunLock":
        import fcntl
        from lt_bench.errors import ConfigError
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise ConfigError(f"{self.path.parent} is in use by a running run (pid {holder}); wait for it, "
                              "or choose another out_dir") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self.handle = handle
        return self

    def release(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    data = (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode()
    return atomic_write(path, lambda f: f.write(data))
