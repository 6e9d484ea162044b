"""``python -m simplenn.testing BACKEND``: the conformance kit of :mod:`simplenn.testing`
on one backend, each check printed as it starts and as it ends.

Every check runs, in each dtype, whatever the others gave; a failure is one line naming
the backend, the op or tensor and the error (an exception raised inside an op included).
Exit status 0 when none failed, 1 when one did or the backend can't run here, 2 for bad
arguments.
"""

from __future__ import annotations

import argparse
import sys
import time

from ..errors import BackendUnavailableError
from . import common

PROG = common.invoked_as("simplenn.testing")


def _backend(text: str) -> str:
    """A registered backend's name (``auto`` is no backend to check)."""
    from ..backends import check_name
    from ..errors import UnknownBackendError

    try:
        return check_name(text, allow_auto=False)
    except UnknownBackendError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> common.ArgumentParser:
    from ..testing import CHECKS, DTYPES

    p = common.ArgumentParser(
        prog=PROG,
        description=(
            "Run the conformance kit on a backend: each op, the gradients, training "
            "trajectories and the augmentation against references, in float64 and float32. "
            "Each check is printed as it starts and as it ends."
        ),
    )
    p.add_argument(
        "backend",
        type=_backend,
        help="a registered backend (python -m simplenn.train --list-backends)",
    )
    p.add_argument(
        "--dtype",
        choices=DTYPES,
        action="append",
        help=f"check in this dtype only (repeatable; default: {', '.join(DTYPES)})",
    )
    p.add_argument(
        "--check",
        choices=tuple(CHECKS),
        action="append",
        metavar="NAME",
        help=f"run this check only (repeatable; default: all of {', '.join(CHECKS)})",
    )
    p.add_argument("--debug", action="store_true", help="show the traceback of each failure")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return common.run_command(PROG, lambda: _check(args), args.debug)


def _check(args) -> int:
    from ..backends import probe_backend
    from ..testing import DTYPES, CheckResult, run_checks

    info = probe_backend(args.backend)
    if not info.available:
        raise BackendUnavailableError(f"backend {args.backend!r} can't run here: {info.reason}")
    dtypes = tuple(args.dtype or DTYPES)

    def report(result: CheckResult) -> None:
        if result.status == "running":
            print(f"{result.check} ({result.dtype}) ...", end=" ", flush=True)
        elif result.status == "passed":
            print(f"passed in {result.seconds:.1f} s", flush=True)
        else:
            print(f"{result.status} in {result.seconds:.1f} s: {result.message}", flush=True)
            if args.debug and result.error is not None:
                import traceback

                traceback.print_exception(result.error, file=sys.stdout)

    detail = ", ".join(x for x in (info.version and f"version {info.version}", info.device) if x)
    print(
        f"the conformance kit on backend {args.backend}" + (f" ({detail})" if detail else ""),
        flush=True,
    )
    start = time.perf_counter()
    results = list(
        run_checks(args.backend, dtypes, tuple(args.check) if args.check else None, report=report)
    )
    counts = {s: sum(r.status == s for r in results) for s in ("passed", "skipped", "failed")}
    print(
        ", ".join(f"{n} {s}" for s, n in counts.items())
        + f" in {time.perf_counter() - start:.1f} s",
        flush=True,
    )
    return common.EXIT_ERROR if counts["failed"] else 0
