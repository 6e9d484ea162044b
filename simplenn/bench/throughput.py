"""``python -m simplenn.bench`` (``--suite throughput``, the default): training throughput
of every backend and peer over a grid, with the machine's roofline measured in the same run.

For each hidden width and batch size of the grid it times one training epoch of each
contender (simplenn's backends and, when installed, PyTorch as ``torch-cpu`` /
``torch-cuda``) over MNIST training images. Each contender runs in a spawned process of
its own, which ends with the bench however the bench dies (:mod:`.lifeline`), and the
contenders take turns epoch by epoch (:func:`run_grid`). A cell's row is printed as soon
as every contender has measured it, under a progress bar on stderr.

Two grids: ``quick`` (the default: one width, three batch sizes, part of an epoch; about a
minute on two cores) and ``full`` (:data:`~.workloads.HIDDEN_SIZES` ×
:data:`~.workloads.BATCH_SIZES`, full epochs).

Roofline. A float32 sgemm with NumPy, timed before the grid, gives the machine's peak.
Each cell's *dense-equivalent* GFLOP/s counts the FLOPs of a step's dense products per
sample trained (:func:`~.workloads.training_flops_per_sample`), whatever the backend
computed, and its share of the peak above 100% means the cell did less arithmetic than
the dense products need (the Numba backend skips zero pixels).

Before the grid, each peer trains one epoch beside the NumPy backend from the same start
and its mean loss must match simplenn's, or the comparison would not be of the same
computation (:func:`check_peer_loss`).
"""

from __future__ import annotations

import multiprocessing
import os
import queue as queue_module
import signal
import statistics
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import BackendUnavailableError, SimplennError
from . import lifeline, sysinfo
from .contenders import (
    PEER_NAMES,
    Availability,
    contender_names,
    make_contender,
    probe_contender,
)
from .workloads import BATCH_SIZES, HIDDEN_SIZES, timed, training_flops_per_sample

MNIST_TRAIN_SIZE = 60000
#: The environment variable that, like ``--skip-backends``, leaves backends (and peers)
#: out of the default grid: comma-separated names.
SKIP_ENV = "SIMPLENN_SKIP_BACKENDS"
#: The peer check: one epoch at batch 64 and a constant learning rate of 0.05, hidden =
#: the grid's first width. float32 round-off differs between the two libraries' products
#: and compounds over an epoch's steps, hence fixed, moderate settings and a relative
#: tolerance well above float32's epsilon.
LOSS_CHECK_BATCH = 64
LOSS_CHECK_LR = 0.05
LOSS_CHECK_RTOL = 1e-3
#: Seconds the coordinator waits between two contenders' turns, so that the threads of
#: the one that just ran (OpenBLAS and OpenMP spin-wait after work) go to sleep first.
HANDOFF_PAUSE = 0.2


class BenchmarkError(SimplennError, RuntimeError):
    """A contender's benchmark process failed; the message carries its traceback."""


@dataclass(frozen=True)
class Grid:
    """The cells a run measures and the work of each: ``samples`` training images per
    timed epoch, ``repeat`` timed epochs after a warm-up."""

    name: str
    hidden: tuple[int, ...]
    batch_sizes: tuple[int, ...]
    samples: int
    repeat: int

    def describe(self) -> str:
        return (
            f"hidden {','.join(map(str, self.hidden))} x batch "
            f"{','.join(map(str, self.batch_sizes))}, {self.samples} images per epoch, "
            f"best of {self.repeat}"
        )


#: The grids ``--grid`` chooses from; the first is the default.
GRIDS = {
    "quick": Grid("quick", (128,), (8, 128, 2048), 8192, 2),
    "full": Grid("full", HIDDEN_SIZES, BATCH_SIZES, MNIST_TRAIN_SIZE, 3),
}


@dataclass
class Cell:
    """One contender at one hidden width and batch size."""

    name: str
    is_peer: bool
    hidden: int
    batch_size: int
    samples: int
    seconds: list[float]
    samples_per_s: float  # from the best (shortest) of ``seconds``
    median_samples_per_s: float
    flops_per_sample: int  # the dense products' (dense-equivalent)
    gflops_per_s: float  # dense-equivalent, of the best epoch
    percent_of_peak: float  # of the sgemm peak; above 100: less arithmetic than dense
    speedup_vs_numpy: float | None = None


@dataclass
class PeerCheck:
    """A peer's mean training loss over one epoch beside simplenn's NumPy backend's."""

    peer: str
    hidden: int
    batch_size: int
    lr: float
    samples: int
    simplenn_loss: float
    peer_loss: float
    relative_difference: float
    rtol: float
    match: bool


# --------------------------------------------------------------------------------------
# Which contenders run.
# --------------------------------------------------------------------------------------
def skip_from_env(environ: dict[str, str] | None = None) -> tuple[tuple[str, ...], list[str]]:
    """The names :data:`SKIP_ENV` lists (known contenders) and those it lists that are
    not contenders here (a plug-in not installed, a typo): ``(known, unknown)``."""
    text = (os.environ if environ is None else environ).get(SKIP_ENV, "")
    names = [t.strip().lower() for t in text.replace(" ", ",").split(",") if t.strip()]
    known = contender_names()
    return (
        tuple(dict.fromkeys(n for n in names if n in known)),
        list(dict.fromkeys(n for n in names if n not in known)),
    )


def select(
    requested: tuple[str, ...] | None,
    skip: dict[str, str] | None = None,
) -> tuple[list[str], list[Availability]]:
    """The contenders to run and those left out, each with its reason. Without
    ``requested``, every contender that runs here except those in ``skip`` (name ->
    why); a contender named in ``requested`` must run."""
    skip = skip or {}
    if requested:
        infos = [probe_contender(n) for n in requested]
        missing = [i for i in infos if not i.available]
        if missing:
            raise BackendUnavailableError(
                "; ".join(f"{i.name!r} unavailable: {i.reason}" for i in missing)
                + " (leave it out of --backends)"
            )
        return [i.name for i in infos], []
    infos = [
        Availability(n, False, skip[n], n in PEER_NAMES) if n in skip else probe_contender(n)
        for n in contender_names()
    ]
    return [i.name for i in infos if i.available], [i for i in infos if not i.available]


# --------------------------------------------------------------------------------------
# The peer check.
# --------------------------------------------------------------------------------------
def _epoch_loss(name: str, hidden: int, samples: int, train: Any, test: Any) -> float:
    """Mean loss of one epoch from the shared start, with the peer check's settings."""
    contender = make_contender(name, hidden, train.X, train.y, test.X)
    return float(contender.train_epoch(LOSS_CHECK_BATCH, samples, lr=LOSS_CHECK_LR))


def _compare(
    peer: str, hidden: int, samples: int, simplenn_loss: float, peer_loss: float
) -> PeerCheck:
    rel = abs(peer_loss - simplenn_loss) / max(abs(simplenn_loss), 1e-12)
    return PeerCheck(
        peer,
        hidden,
        LOSS_CHECK_BATCH,
        LOSS_CHECK_LR,
        samples,
        simplenn_loss,
        peer_loss,
        rel,
        LOSS_CHECK_RTOL,
        bool(rel <= LOSS_CHECK_RTOL),
    )


def check_peer_loss(peer: str, hidden: int, samples: int, train: Any, test: Any) -> PeerCheck:
    """Train one epoch of ``peer`` and of the NumPy backend from the same start (batch
    :data:`LOSS_CHECK_BATCH`, learning rate :data:`LOSS_CHECK_LR`) and compare
    their mean losses within :data:`LOSS_CHECK_RTOL`."""
    return _compare(
        peer,
        hidden,
        samples,
        _epoch_loss("numpy", hidden, samples, train, test),
        _epoch_loss(peer, hidden, samples, train, test),
    )


# --------------------------------------------------------------------------------------
# Measuring.
# --------------------------------------------------------------------------------------
def _worker(
    inbox: Any,
    outbox: Any,
    name: str,
    parent_pid: int,
    hidden_sizes: tuple[int, ...],
    batch_sizes: tuple[int, ...],
    samples: int,
    repeat: int,
) -> None:
    """The body of one contender's process: a peer's loss for the peer check, then every
    cell -- for each width and batch size an untimed warm-up epoch (JIT compilation, GPU
    kernels, caches) and ``repeat`` timed epochs, each only when the coordinator says
    "go" -- then the BLAS libraries this process loaded. Messages go out on ``outbox``
    as ``(name, kind, value)``; an exception goes back as text. (The NumPy reference
    loss is computed by the parent: NumPy's BLAS threads, once they have worked, slow a
    peer's threads down when they share a process.) The process ends within a moment
    of the death of ``parent_pid``, the bench."""
    lifeline.exit_with_parent(parent_pid)
    try:
        from ..data.datasets import load_mnist

        train, test = load_mnist()
        if name in PEER_NAMES:
            inbox.get()  # our turn
            outbox.put(
                (name, "peer_loss", _epoch_loss(name, hidden_sizes[0], samples, train, test))
            )
        for hidden in hidden_sizes:
            contender = None
            for bs in batch_sizes:
                seconds = []
                for turn in range(repeat + 1):
                    inbox.get()  # our turn
                    if contender is None:  # built (and compiled) in a turn of its own
                        contender = make_contender(name, hidden, train.X, train.y, test.X)
                    if turn == 0:
                        # the timed epoch's own inputs: JAX compiles per input shape
                        contender.train_epoch(bs, samples)
                    else:
                        seconds.append(timed(contender.train_epoch, bs, samples)[0])
                    outbox.put((name, "turn_done", None))
                outbox.put(
                    (
                        name,
                        "cell",
                        {
                            "name": name,
                            "is_peer": bool(contender.is_peer),
                            "hidden": hidden,
                            "batch_size": bs,
                            "samples": samples,
                            "seconds": seconds,
                        },
                    )
                )
            del contender
        outbox.put((name, "blas", sysinfo.blas_libraries()))
    except BaseException:  # noqa: BLE001 -- report everything, Ctrl-C included, then stop
        outbox.put((name, "error", traceback.format_exc()))


def run_grid(
    names: list[str],
    hidden_sizes: tuple[int, ...],
    batch_sizes: tuple[int, ...],
    samples: int,
    repeat: int,
    progress: bool = True,
    on_cells: Callable[[list[dict[str, Any]]], None] | None = None,
) -> tuple[list[dict[str, Any]], list[PeerCheck], list[dict[str, Any]]]:
    """Measure every contender, each in a process of its own, taking turns epoch by epoch.

    Separate processes keep the contenders from slowing each other down: PyTorch's
    OpenMP threads and OpenBLAS's threads both spin-wait after work, and on a machine
    with few cores one library's idle spinning steals the other's cores. Only one
    process works at a time, and for every cell the contenders take turns -- warm-up
    epochs, then timed epoch 1 of each, timed epoch 2 of each, ... -- so a slow spell of
    the machine (other tenants, frequency changes) hits every contender of a cell alike
    and the ratios between them hold. ``on_cells`` is called with the raw cells of each
    width and batch size (in ``names`` order) as soon as all have arrived; the progress
    bar (stderr) counts cells. Returns the raw cells, the peer checks and every BLAS
    library the processes loaded.
    """
    from tqdm.auto import tqdm

    from ..data.datasets import load_mnist

    reference_loss = None
    if any(n in PEER_NAMES for n in names):
        train, test = load_mnist()
        reference_loss = _epoch_loss("numpy", hidden_sizes[0], samples, train, test)
    ctx = multiprocessing.get_context("spawn")
    outbox = ctx.Queue()
    inboxes = {name: ctx.Queue() for name in names}
    procs = {
        name: ctx.Process(
            target=_worker,
            args=(
                inboxes[name],
                outbox,
                name,
                os.getpid(),
                hidden_sizes,
                batch_sizes,
                samples,
                repeat,
            ),
            daemon=True,
        )
        for name in names
    }
    cells: list[dict[str, Any]] = []
    checks: list[PeerCheck] = []
    blas: dict[str, dict[str, Any]] = {}
    bar = tqdm(
        total=len(names) * len(hidden_sizes) * len(batch_sizes),
        desc="bench",
        unit="cell",
        file=sys.stderr,
        disable=None if progress else True,
        dynamic_ncols=True,
    )

    arrived: Counter[tuple[str, str]] = Counter()

    def wait_for(name: str, kind: str) -> None:
        """Handle messages until ``name`` has sent ``kind`` (perhaps already, while we
        waited for another message)."""
        while not arrived[name, kind]:
            try:
                sender, got, value = outbox.get(timeout=1.0)
            except queue_module.Empty:
                if not procs[name].is_alive():
                    raise BenchmarkError(
                        f"the {name} benchmark process died (exit status "
                        f"{procs[name].exitcode}) without reporting why"
                    )
                continue
            if got == "error":
                raise BenchmarkError(f"benchmarking {sender} failed:\n{value.rstrip()}")
            if got == "peer_loss":
                checks.append(_compare(sender, hidden_sizes[0], samples, reference_loss, value))
            elif got == "cell":
                cells.append(value)
                bar.update()
                bar.set_postfix_str(f"h={value['hidden']} batch={value['batch_size']}")
            elif got == "blas":
                blas.update({str(b["filepath"]): b for b in value})
            arrived[sender, got] += 1
        arrived[name, kind] -= 1

    rank = {n: i for i, n in enumerate(names)}
    # A terminated run must not leave its workers behind, still using the cores.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    finished = False
    try:
        for proc in procs.values():
            proc.start()
        for name in names:
            if name in PEER_NAMES:
                inboxes[name].put("go")
                wait_for(name, "peer_loss")
        for _ in hidden_sizes:
            for _ in batch_sizes:
                for turn in range(repeat + 1):
                    # rotate who goes first, so no contender always follows the same one
                    order = names[turn % len(names) :] + names[: turn % len(names)]
                    for name in order:
                        time.sleep(HANDOFF_PAUSE)
                        inboxes[name].put("go")
                        wait_for(name, "turn_done")
                for name in names:
                    wait_for(name, "cell")
                if on_cells is not None:
                    on_cells(sorted(cells[-len(names) :], key=lambda c: rank[c["name"]]))
        for name in names:
            wait_for(name, "blas")
        finished = True
    finally:
        signal.signal(signal.SIGTERM, previous)
        bar.close()
        for proc in procs.values():
            if not finished:  # the others wait for a turn that will not come
                proc.terminate()
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
    cells.sort(
        key=lambda c: (
            hidden_sizes.index(c["hidden"]),
            batch_sizes.index(c["batch_size"]),
            rank[c["name"]],
        )
    )
    return cells, checks, list(blas.values())


def summarize(raw: list[dict[str, Any]], peak_flops: float) -> list[Cell]:
    """Cells with their rates: the best (shortest) epoch of each gives samples/s and the
    dense-equivalent GFLOP/s, ``peak_flops`` (FLOP/s) the share of the peak, and the
    NumPy backend's rate at the same width and batch size the speed-up."""
    cells = []
    for r in raw:
        flops = training_flops_per_sample(r["hidden"])
        rate = r["samples"] / min(r["seconds"])
        cells.append(
            Cell(
                name=r["name"],
                is_peer=r["is_peer"],
                hidden=r["hidden"],
                batch_size=r["batch_size"],
                samples=r["samples"],
                seconds=r["seconds"],
                samples_per_s=rate,
                median_samples_per_s=r["samples"] / statistics.median(r["seconds"]),
                flops_per_sample=flops,
                gflops_per_s=rate * flops / 1e9,
                percent_of_peak=100.0 * rate * flops / peak_flops,
            )
        )
    numpy_rate = {(c.hidden, c.batch_size): c.samples_per_s for c in cells if c.name == "numpy"}
    for c in cells:
        base = numpy_rate.get((c.hidden, c.batch_size))
        c.speedup_vs_numpy = c.samples_per_s / base if base else None
    return cells


# --------------------------------------------------------------------------------------
# The table: printed row by row as the cells come, or whole (python -m simplenn.bench.report).
# --------------------------------------------------------------------------------------
HEADER = (
    "hidden",
    "batch",
    "backend",
    "samples/s",
    "median",
    "vs numpy",
    "dense GFLOP/s",
    "% of peak",
)
#: The least width of each column: numbers up to 999,999,999 samples/s fit, so rows
#: printed one by one line up.
MIN_WIDTHS = (6, 5, 7, 11, 11, 8, 13, 9)
_RIGHT = {0, 1, 3, 4, 5, 6, 7}


def _label(name: str, is_peer: bool) -> str:
    return name + (" (peer)" if is_peer else "")


def _fields(c: Cell) -> tuple[str, ...]:
    return (
        str(c.hidden),
        str(c.batch_size),
        _label(c.name, c.is_peer),
        f"{c.samples_per_s:,.0f}",
        f"{c.median_samples_per_s:,.0f}",
        f"{c.speedup_vs_numpy:.2f}x" if c.speedup_vs_numpy is not None else "-",
        f"{c.gflops_per_s:.1f}",
        f"{c.percent_of_peak:.1f}%",
    )


def table_widths(labels: list[str], rows: list[tuple[str, ...]] = ()) -> list[int]:
    """Column widths for contenders shown as ``labels`` (``NAME`` or ``NAME (peer)``)
    and any ``rows`` already formatted."""
    widths = [max(m, len(h)) for m, h in zip(MIN_WIDTHS, HEADER)]
    widths[2] = max([widths[2], *map(len, labels)])
    for row in rows:
        widths = [max(w, len(v)) for w, v in zip(widths, row)]
    return widths


def format_line(values: tuple[str, ...], widths: list[int]) -> str:
    """One Markdown table line of ``values`` in columns of ``widths``."""
    return (
        "| "
        + " | ".join(
            v.rjust(w) if i in _RIGHT else v.ljust(w)
            for i, (v, w) in enumerate(zip(values, widths))
        )
        + " |"
    )


def table_head(widths: list[int]) -> list[str]:
    """The header line and the alignment rule of the table."""
    rule = (
        "|"
        + "|".join(
            ("-" * (w + 1) + ":") if i in _RIGHT else ("-" * (w + 2)) for i, w in enumerate(widths)
        )
        + "|"
    )
    return [format_line(HEADER, widths), rule]


def table_rows(cells: list[Cell], widths: list[int]) -> list[str]:
    return [format_line(_fields(c), widths) for c in cells]


def format_table(cells: list[Cell]) -> str:
    """A Markdown table: one row per width, batch size and contender; samples/s of the
    best epoch (and the speed-up over numpy, the dense-equivalent GFLOP/s and the share
    of the peak of it) and of the median one."""
    order = {n: i for i, n in enumerate(dict.fromkeys(c.name for c in cells))}
    cells = sorted(cells, key=lambda c: (c.hidden, c.batch_size, order[c.name]))
    rows = [_fields(c) for c in cells]
    widths = table_widths([], rows)
    return "\n".join([*table_head(widths), *(format_line(r, widths) for r in rows)])
