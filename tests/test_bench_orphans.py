"""No process the bench starts outlives it, however it dies: SIGKILL ``python -m
simplenn.bench``, a process running ``--suite recipe``'s children, or the A/B tool, and
every process it started is gone within a few seconds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

try:
    import psutil
except ImportError:  # the process table is then read from /proc
    psutil = None

ROOT = Path(__file__).resolve().parents[1]
#: How long the children may outlive their parent.
GRACE_SECONDS = 5.0

pytestmark = pytest.mark.skipif(
    psutil is None and not Path("/proc/self/stat").exists(),
    reason="needs psutil or /proc to read the process table",
)


def _table() -> dict[int, tuple[int, str, str]]:
    """pid -> (parent pid, start time, command line) of every running process (zombies,
    which have exited and wait for their new parent to reap them, left out)."""
    table = {}
    if psutil is not None:
        for p in psutil.process_iter(["ppid", "create_time", "cmdline", "status"]):
            if p.info["status"] != psutil.STATUS_ZOMBIE:
                table[p.pid] = (
                    p.info["ppid"],
                    str(p.info["create_time"]),
                    " ".join(p.info["cmdline"] or []),
                )
        return table
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:  # exited meanwhile
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        if fields[0] != "Z":
            table[int(entry)] = (int(fields[1]), fields[19], cmdline)
    return table


def _descendants(pid: int) -> dict[int, tuple[str, str]]:
    """pid -> (start time, command line) of every process below ``pid``."""
    table = _table()
    found, todo = {}, [pid]
    while todo:
        parent = todo.pop()
        for child, (ppid, start, cmdline) in table.items():
            if ppid == parent and child not in found:
                found[child] = (start, cmdline)
                todo.append(child)
    return found


def _survivors_of_sigkill(
    argv: list[str], ready: Callable[[list[str]], bool], settle: float = 1.0
) -> tuple[dict[int, str], dict[int, str]]:
    """Start ``argv``, wait until ``ready`` holds for its descendants' command lines (and
    ``settle`` seconds more), SIGKILL it and wait up to :data:`GRACE_SECONDS`. Returns
    the descendants it had, and those still running, pid -> command line."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
    }
    proc = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    seen: dict[int, tuple[str, str]] = {}
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"{argv} exited with status {proc.returncode}"
            seen.update(_descendants(proc.pid))
            if ready([cmdline for _, cmdline in seen.values()]):
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"{argv} started no such child within 120 s: {seen}")
        time.sleep(settle)
        seen.update(_descendants(proc.pid))
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + GRACE_SECONDS
    while True:
        table = _table()
        left = {
            pid: cmdline
            for pid, (start, cmdline) in seen.items()
            if pid in table and table[pid][1] == start
        }
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for pid in left:  # don't let a failing test leave them running either
        os.kill(pid, signal.SIGKILL)
    return {pid: cmdline for pid, (_, cmdline) in seen.items()}, left


def test_sigkilled_bench_leaves_no_worker():
    seen, left = _survivors_of_sigkill(
        [
            sys.executable,
            "-m",
            "simplenn.bench",
            "--backends",
            "numpy",
            "--hidden",
            "8",
            "--batch-sizes",
            "1",
            "--samples",
            "60000",
            "--repeat",
            "50",
            "--peak-size",
            "64",
        ],
        lambda cmdlines: any("multiprocessing.spawn" in c for c in cmdlines),
        settle=2.0,
    )
    assert any("multiprocessing.spawn" in c for c in seen.values())
    assert not left, f"still running {GRACE_SECONDS} s after the bench was killed: {left}"


@pytest.mark.skipif(
    not sys.platform.startswith("linux"),
    reason="the kernel ends a foreign child with its parent on Linux only",
)
def test_recipe_child_dies_with_the_bench():
    """``--suite recipe`` times programs that are not the bench's (python -m
    simplenn.train, the peer scripts): they die with it too."""
    child = "import time; time.sleep(300)"
    parent = (
        "import os, sys; from simplenn.bench.recipe import run_process; "
        f"run_process([sys.executable, '-c', {child!r}], dict(os.environ))"
    )
    seen, left = _survivors_of_sigkill(
        [sys.executable, "-c", parent], lambda cmdlines: any(child in c for c in cmdlines)
    )
    assert any(child in c for c in seen.values())
    assert not left, f"still running {GRACE_SECONDS} s after its parent was killed: {left}"


def test_sigkilled_ab_tool_leaves_no_worker():
    """Killed while a worker trains (an epoch at hidden 2048, batch 1, takes far longer
    than the grace period), and while the other waits for its turn."""
    seen, left = _survivors_of_sigkill(
        [
            sys.executable,
            "benchmarks/tools/ab_trees.py",
            "--old",
            ".",
            "--new",
            ".",
            "--backends",
            "numpy",
            "--hidden",
            "2048",
            "--batch-sizes",
            "1",
            "--repeat",
            "50",
        ],
        lambda cmdlines: sum("--worker" in c for c in cmdlines) == 2,
        settle=3.0,
    )
    assert sum("--worker" in c for c in seen.values()) == 2
    assert not left, f"still running {GRACE_SECONDS} s after the tool was killed: {left}"
