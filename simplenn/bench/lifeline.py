"""Child processes that end with the bench, however the bench dies (SIGKILL included).

Two kinds of children need two means:

- the bench's own workers call :func:`exit_with_parent` first thing: a daemon thread
  polls :func:`os.getppid` and ends the process once its parent is gone (a child whose
  parent died is handed to another process, so its parent id changes);
- a program that is not the bench's (``python -m simplenn.train`` and the peer scripts
  of ``--suite recipe``, timed as a user runs them) gets :func:`parent_death_preexec` as
  ``preexec_fn``: on Linux the kernel sends it SIGKILL when the bench dies. Elsewhere
  that function is None, and such a child outlives a bench killed by SIGKILL.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

#: Seconds between two looks at the parent's process id.
POLL_SECONDS = 0.2
#: The exit status of a worker that ended because its parent died.
EXIT_ORPHANED = 3
#: ``PR_SET_PDEATHSIG`` of Linux's ``<sys/prctl.h>``.
_PR_SET_PDEATHSIG = 1


def exit_with_parent(parent_pid: int, poll_seconds: float = POLL_SECONDS) -> threading.Thread:
    """In a child process: end it (``os._exit(EXIT_ORPHANED)``, no clean-up) within
    ``poll_seconds`` of the death of its parent ``parent_pid``, the process that
    started it. Returns the watching thread (a daemon, already started)."""
    if os.getppid() != parent_pid:  # the parent died before we got here
        os._exit(EXIT_ORPHANED)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_seconds)
        os._exit(EXIT_ORPHANED)

    thread = threading.Thread(target=watch, name="simplenn-bench-lifeline", daemon=True)
    thread.start()
    return thread


def parent_death_preexec() -> Callable[[], None] | None:
    """A ``preexec_fn`` for :mod:`subprocess` that makes the child receive SIGKILL when
    this process dies, through Linux's ``prctl(PR_SET_PDEATHSIG)``; None where that
    is not available. Start the child from the main thread: the kernel watches the
    thread that started it."""
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        if prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            return  # the child then runs as it would without the bench's guard
        if os.getppid() != parent:  # the bench died between the fork and the prctl
            os._exit(EXIT_ORPHANED)

    return preexec
