"""Checking output paths before the work that fills them, and a fallback when the
final write fails anyway.

:func:`check_output_file` and :func:`check_writable_dir` prove a path writable by
creating and removing a temp file where the output will go, so a command that would
fail to save its result fails before training, not after.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..errors import SimplennError


class OutputError(SimplennError):
    """An output path that cannot be written (or would overwrite another output)."""


def check_writable_dir(directory: str | os.PathLike, flag: str) -> Path:
    """Create and remove a temp file in ``directory`` (given as ``flag``); an
    :class:`OutputError` naming both when that fails."""
    directory = Path(directory)
    try:
        # named as an atomic write's temp file, so a write there removes it if left behind
        fd, probe = tempfile.mkstemp(
            dir=directory, prefix=f".simplenn-write-check.{os.getpid()}-", suffix=".tmp"
        )
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = "permission denied" if isinstance(exc, PermissionError) else exc.strerror or exc
        raise OutputError(f"{flag} {directory}: cannot write files there ({reason})") from None
    return directory


def check_output_file(path: str | os.PathLike, flag: str) -> Path:
    """``path`` (given as ``flag``) as a file that can be written: not a directory or
    other non-regular file, in a directory that exists and takes new files."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{flag} {path} is a directory; give the path of a file in it")
    if path.exists() and not path.is_file():
        raise OutputError(f"{flag} {path} is not a regular file; give a file name")
    if not path.parent.is_dir():
        raise OutputError(f"{flag} {path}: directory {path.parent} does not exist")
    check_writable_dir(path.parent, flag)
    return path


def fallback_path(path: str | os.PathLike, directory: str | os.PathLike | None = None) -> Path:
    """A new file name for what could not be written to ``path``: ``STEM.unsaved-*SUFFIX``
    beside it (or in ``directory``), created empty so that no other run takes it."""
    path = Path(path)
    fd, name = tempfile.mkstemp(
        dir=path.parent if directory is None else directory,
        prefix=f"{path.stem}.unsaved-",
        suffix=path.suffix,
    )
    os.close(fd)
    return Path(name)
