"""Atomic file writes: the one way simplenn writes a file that must never be left damaged."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

#: The temp files of atomic writes: ``.NAME.PID-RANDOM.tmp`` (PID: the writing process).
_TEMP = re.compile(r"\..+\.(\d+)-[a-z0-9_]{8}\.tmp")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` is always either the old file or the
    complete new one: temp file in the same directory, fsync, rename, fsync the dir.

    A process killed mid-write may leave a hidden ``.NAME.PID-RANDOM.tmp`` file beside
    ``path``, never a damaged ``path``; each write first removes the temp files in its
    directory whose writing process is gone (:func:`remove_stale_temp_files`).
    """
    path = Path(path)
    remove_stale_temp_files(path.parent)
    fd, tmp = tempfile.mkstemp(
        dir=path.parent or ".", prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp"
    )
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~_umask())  # mkstemp makes 0600; give open()'s mode
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:
        dir_fd = os.open(path.parent or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def remove_stale_temp_files(directory: str | os.PathLike) -> list[Path]:
    """Remove the temp files that interrupted atomic writes left in ``directory`` (those
    whose writing process no longer runs); the paths removed. Errors are ignored: this
    is housekeeping."""
    removed = []
    try:
        entries = list(os.scandir(directory or "."))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP.fullmatch(entry.name)
        if match is None or _running(int(match.group(1))):
            continue
        try:
            os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            pass
    return removed


def _running(pid: int) -> bool:
    """Whether process ``pid`` exists (this one included)."""
    if pid == os.getpid():
        return True
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # another user's
        return True
    return True


def _umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask
