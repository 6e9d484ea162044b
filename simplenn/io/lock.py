"""One run per directory: an advisory lock a training run holds on its checkpoint
directory for as long as it owns it.

The lock is ``fcntl.flock`` on the file ``DIR/run.lock``, which holds the owner's PID.
The operating system releases it when the owner exits, however it exits (SIGKILL
included), so a stale lock file never blocks the next run. Before each write into the
directory the owner checks that the lock file is still the one it locked
(:meth:`DirectoryLock.verify`), so a run whose lock file was removed or replaced
cannot overwrite another run's checkpoint.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Self

from ..errors import SimplennError

#: The lock file inside a locked directory.
LOCK_NAME = "run.lock"


class DirectoryLockedError(SimplennError, RuntimeError):
    """The directory is owned by another running process (or the lock was lost)."""


class DirectoryLock:
    """The lock on ``directory`` (which must exist), taken by :meth:`acquire` (or by
    entering it as a context manager) and released by :meth:`release` or the process's
    exit.

    ``purpose`` names the directory in messages (e.g. ``--checkpoint-dir``).
    """

    def __init__(self, directory: str | os.PathLike, purpose: str = "directory") -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self.purpose = purpose
        self._fd: int | None = None

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock, or raise :class:`DirectoryLockedError` at once naming the
        directory and the PID of the process that holds it."""
        try:
            import fcntl
        except ImportError:  # not POSIX: no advisory locks, the lock file only names the run
            fcntl = None
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise DirectoryLockedError(
                f"{self.purpose} {self.directory}: cannot create the lock "
                f"file {self.path} ({exc.strerror or exc})"
            ) from None
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_pid(fd)
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise DirectoryLockedError(
                    f"{self.purpose} {self.directory}: cannot lock "
                    f"{self.path} ({exc.strerror or exc})"
                ) from None
            who = f"PID {holder}" if holder else "another process"
            raise DirectoryLockedError(
                f"{self.purpose} {self.directory} is in use by another run ({who}); wait for "
                f"it to finish or stop it, or choose another directory"
            ) from None
        try:
            pid = f"{os.getpid()}\n".encode()
            os.pwrite(fd, pid, 0)
            os.ftruncate(fd, len(pid))
        except OSError:
            pass  # the PID is only for messages; the lock is what counts
        self._fd = fd

    def release(self) -> None:
        """Give the lock up (the lock file stays, unlocked)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock and the lock file is still the one locked."""
        if self._fd is None:
            return False
        try:
            mine, there = os.fstat(self._fd), os.stat(self.path)
        except OSError:
            return False
        return (mine.st_dev, mine.st_ino) == (there.st_dev, there.st_ino)

    def verify(self) -> None:
        """Raise :class:`DirectoryLockedError` unless the lock is held (call it before
        each write into the directory)."""
        if not self.held:
            raise DirectoryLockedError(
                f"{self.purpose} {self.directory}: this run no longer holds its lock "
                f"({self.path} was removed or replaced), so it writes nothing there"
            )


def _read_pid(fd: int) -> int | None:
    """The PID written in the lock file open as ``fd`` (None if unreadable)."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None
