"""What every ``python -m simplenn.*`` command shares: its name as the user invoked it,
``--version``, argument types that fail with a one-line message (exit 2) and one place
that turns library errors into a one-line message and exit status 1 (``--debug`` shows
the traceback)."""

from __future__ import annotations

import argparse
import gc
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path

from .._version import __version__
from ..errors import SimplennError

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell reports a command killed by it


#: What ``--version`` prints: the distribution's name and version.
VERSION_LINE = f"simplenn-backends {__version__}"


def invoked_as(module: str) -> str:
    """The name of command ``module`` (e.g. ``simplenn.train``) as the user invoked it:
    its console script's name (``simplenn-train``) when this process runs that script,
    else ``python -m simplenn.train``."""
    script = module.replace(".", "-")
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    for suffix in (".exe", "-script.py"):  # the script launchers on Windows
        name = name.removesuffix(suffix)
    return script if name == script else f"python -m {module}"


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line: ``PROG: error: MESSAGE (see --help)``,
    and every command has ``--version``."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.add_argument(
            "--version",
            action="version",
            version=VERSION_LINE,
            help=f"print the version ({VERSION_LINE}) and exit",
        )

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_float(text: str) -> float:
    value = _finite(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def nonnegative_float(text: str) -> float:
    value = _finite(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def unit_interval(text: str) -> float:
    value = _finite(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}")
    return value


def backend_name(text: str) -> str:
    """A registered backend's name, or ``auto`` (``--list-backends`` shows them)."""
    from ..backends import check_name
    from ..errors import UnknownBackendError

    try:
        return check_name(text)
    except UnknownBackendError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


BACKEND_HELP = (
    "array backend: auto, or any registered backend (--list-backends shows them "
    "all with why each can or can't run here)"
)


def existing_dir(text: str) -> Path:
    """A path to a directory that exists (a file there is refused as not a directory)."""
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"directory {text!r} does not exist")
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is not a directory")
    return path


def run_command(prog: str, main: Callable[[], int], debug: bool) -> int:
    """Run ``main``; a :class:`SimplennError` becomes ``PROG: error: ...`` and exit 1."""
    try:
        return main()
    except SimplennError as exc:
        if debug:
            raise
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except MemoryError as exc:
        if debug:
            raise
        detail = " ".join(str(exc).split()) or "MemoryError"
        print(
            f"{prog}: error: out of memory ({detail}); free memory or ask for less (a "
            f"smaller model, batch or image)",
            file=sys.stderr,
        )
        return EXIT_ERROR
    except BrokenPipeError:  # stdout closed early (e.g. piped into `head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        # The command is done and its objects live until exit anyway: freezing them
        # spares the interpreter's last garbage collection a walk over Numba's many
        # compiled-function objects.
        gc.freeze()
