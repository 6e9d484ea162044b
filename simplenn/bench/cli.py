"""``python -m simplenn.bench``: training throughput of every backend (and peer) on this machine.

For each hidden width and batch size of the grid it times one training epoch of
each contender (simplenn's ``numpy``, ``numba``, ``cupy`` backends and, when
installed, PyTorch as ``torch-cpu`` / ``torch-cuda``) over the MNIST training images
and prints a table: samples/s, the speed-up over the NumPy backend and the share of
this machine's peak, measured in the same run by timing a large float32 matrix
product. The FLOPs counted per sample are derived in :mod:`simplenn.bench.workloads`.
Before its grid, each peer trains one epoch beside the NumPy backend from the same
start and its mean loss must match simplenn's: otherwise the comparison would not be
of the same computation, and the command exits with status 1. Each contender runs in a
fresh process of its own; the contenders take turns epoch by epoch (see :func:`run_grid`).
A contender written ``NAME@PATH`` is backend (or peer) ``NAME`` of the simplenn in the
checkout ``PATH``, so two source trees can be timed side by side in one run.

That grid is the default suite, ``--suite throughput``. ``--suite gpu`` times the GPU
backend instead (time per epoch with and without CUDA graphs, beside numba and PyTorch
CUDA): see :mod:`simplenn.bench.gpu`. ``--suite recipe`` times whole processes instead:
``python -m simplenn.train`` with an empty and a warm Numba cache, and the same recipe
in PyTorch and scikit-learn, to the final test accuracy: see :mod:`simplenn.bench.recipe`.
``--suite augment`` times an epoch with each augmentation: see :mod:`simplenn.bench.augment`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import multiprocessing
import os
import queue as queue_module
import shlex
import signal
import statistics
import subprocess
import sys
import time
import traceback
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..cli import common
from . import augment, gpu, recipe, sysinfo
from ..core.training import CHUNK_SAMPLES, TrainConfig
from ..errors import BackendUnavailableError, SimplennError
from .contenders import (
    PEER_NAMES, Availability, contender_names, make_contender, probe_contender,
)
from .workloads import (
    BATCH_SIZES, HIDDEN_SIZES, N_CLASSES, N_INPUTS, THROUGHPUT_LR, timed,
    training_flops_per_sample,
)

PROG = "python -m simplenn.bench"
DEFAULT_BATCH_SIZES = BATCH_SIZES
DEFAULT_HIDDEN = HIDDEN_SIZES
DEFAULT_REPEAT = 3
DEFAULT_PEAK_SIZE = 2048
#: The suites --suite chooses from; the first is the default.
SUITES = ("throughput", "gpu", "recipe", "augment")
#: The untimed warm-up epoch of each cell: at least one of fit's chunks of work.
WARMUP_SAMPLES = CHUNK_SAMPLES
MNIST_TRAIN_SIZE = 60000
#: The peer check: one epoch at batch 64 and a constant learning rate of 0.05, hidden =
#: the grid's first width. float32 round-off differs between the two libraries' products
#: and compounds over an epoch's steps (at lr 0.2, the training default, by ~2e-3
#: relative), hence fixed, moderate settings and a relative tolerance well above
#: float32's epsilon.
LOSS_CHECK_BATCH = 64
LOSS_CHECK_LR = 0.05
LOSS_CHECK_RTOL = 1e-3
#: Set in the re-executed process by --unset-openblas-env: what it unset.
_UNSET_MARKER = "SIMPLENN_BENCH_UNSET_OPENBLAS"


class BenchmarkError(SimplennError, RuntimeError):
    """A contender's benchmark process failed; the message carries its traceback."""


# --------------------------------------------------------------------------------------
# Command line.
# --------------------------------------------------------------------------------------
def _int_list(text: str) -> tuple[int, ...]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of positive integers, "
                                         f"got {text!r}")
    values = tuple(common.positive_int(t) for t in items)
    return tuple(dict.fromkeys(values))


def split_label(label: str) -> tuple[str, str | None]:
    """``(NAME, PATH)`` of a contender label ``NAME@PATH``; ``(label, None)`` without ``@``."""
    name, at, path = label.partition("@")
    return name, (path if at else None)


def _tree_label(item: str) -> str:
    """``NAME@PATH`` with ``PATH`` made absolute, once it holds ``simplenn/__init__.py``."""
    name, path = split_label(item)
    name, path = name.strip().lower(), (path or "").strip()
    if not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME@PATH, got {item!r}")
    root = os.path.abspath(os.path.expanduser(path))
    if not os.path.isdir(root):
        raise argparse.ArgumentTypeError(f"{item!r}: directory {root!r} does not exist")
    if not os.path.isfile(os.path.join(root, "simplenn", "__init__.py")):
        raise argparse.ArgumentTypeError(
            f"{item!r}: {root!r} has no simplenn/__init__.py (PATH must be a simplenn checkout)")
    return f"{name}@{root}"


def _contender_list(text: str) -> tuple[str, ...]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    labels = [_tree_label(t) if "@" in t else t.lower() for t in items]
    known = contender_names()
    unknown = [t for t in labels if "@" not in t and t not in known]
    if not items or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown backend or peer {', '.join(map(repr, unknown)) or repr(text)}; valid names "
            f"are: {', '.join(known)}")
    return tuple(dict.fromkeys(labels))


def _samples(text: str) -> int:
    value = common.positive_int(text)
    if value > MNIST_TRAIN_SIZE:
        raise argparse.ArgumentTypeError(
            f"at most {MNIST_TRAIN_SIZE} (the MNIST training set), got {value}")
    return value


def build_parser() -> common.ArgumentParser:
    p = common.ArgumentParser(prog=PROG, description=(
        "Time one training epoch of each backend (and of PyTorch, when installed) over a "
        "grid of batch sizes and hidden widths, and print samples/s, the speed-up over "
        "the NumPy backend and the share of this machine's measured float32 peak "
        "(--suite throughput, the default). --suite gpu times the GPU backend instead: "
        f"ms per epoch of cupy at batch {'/'.join(map(str, gpu.CUPY_BATCH_SIZES))} with "
        f"and without CUDA graphs, numba at batch {gpu.NUMBA_BATCH} and PyTorch CUDA "
        f"eager at batch {gpu.TORCH_BATCH}; what can't run here is skipped with the "
        "reason, so without a GPU it is a smoke test that times numba alone. --suite recipe "
        "times whole processes from start to final test accuracy: python -m simplenn.train "
        "(numba) with an empty, then a warm Numba cache (NUMBA_CACHE_DIR set to a new "
        "temporary directory; the user's cache is not touched), and the same recipe as a "
        "PyTorch script and as scikit-learn's MLPClassifier, when installed. --suite augment "
        f"times a training epoch (hidden {augment.HIDDEN}, batch {augment.BATCH_SIZE} unless "
        "given) with each augmentation, none, affine and elastic, taking turns."))
    p.add_argument("--suite", choices=SUITES, default=SUITES[0],
                   help="throughput: the grid of backends, batch sizes and widths (default); "
                        "gpu: time per epoch of the GPU backend, written to --out-dir "
                        "(--backends, --hidden, --peak-size and --plot are the grid's only); "
                        "recipe: wall time and test accuracy of whole training processes: "
                        "simplenn's first run (cold Numba cache) against its second (warm), "
                        "and against PyTorch and scikit-learn (takes --repeat and --json only); "
                        "augment: the epoch time with each --augment of the train command, on "
                        "one backend (--backends NAME, default auto's pick; one --hidden and "
                        "--batch-sizes value; --repeat turns, default 3)")
    p.add_argument("--backends", type=_contender_list, default=None, metavar="LIST",
                   help=f"comma-separated, from {','.join(contender_names())} (default: every one "
                        "that runs here; the others are listed with the reason); NAME@PATH "
                        "is backend NAME of the simplenn checkout in directory PATH, e.g. "
                        "numba@/tmp/before,numba to compare two source trees")
    p.add_argument("--batch-sizes", type=_int_list, default=None, metavar="LIST",
                   help=f"comma-separated (default {','.join(map(str, DEFAULT_BATCH_SIZES))}; "
                        f"with --suite gpu the cupy backend's, default "
                        f"{','.join(map(str, gpu.CUPY_BATCH_SIZES))})")
    p.add_argument("--hidden", type=_int_list, default=None, metavar="LIST",
                   help=f"hidden widths, comma-separated (default "
                        f"{','.join(map(str, DEFAULT_HIDDEN))})")
    p.add_argument("--repeat", type=common.positive_int, default=None,
                   help=f"timed epochs per cell after one warm-up; the best counts "
                        f"(default {DEFAULT_REPEAT}; with --suite gpu per configuration, "
                        f"the median counts, default {gpu.DEFAULT_EPOCHS}; with --suite "
                        f"recipe the turns of whole runs, the best wall time counts, "
                        f"default 1)")
    p.add_argument("--processes", type=common.positive_int, default=None, metavar="N",
                   help="measure the grid N times, each time every contender in a fresh "
                        "process, and keep each cell's best epoch: where a process's arrays "
                        "and code land in memory moves its speed by several percent, so "
                        "comparing source trees of one backend wants several (default 1)")
    p.add_argument("--samples", type=_samples, default=MNIST_TRAIN_SIZE,
                   help=f"training images per timed epoch, from the MNIST training set "
                        f"(default {MNIST_TRAIN_SIZE}: a full epoch)")
    p.add_argument("--peak-size", type=common.positive_int, default=None, metavar="N",
                   help=f"measure the machine's peak with an N x N float32 matrix product "
                        f"(default {DEFAULT_PEAK_SIZE})")
    p.add_argument("--json", type=Path, default=None, metavar="PATH",
                   help="also write every measurement and the system description to PATH")
    p.add_argument("--out-dir", type=common.existing_dir, default=None, metavar="DIR",
                   help=f"--suite gpu only: write {gpu.JSON_NAME} (every measurement, as "
                        f"--json) and {gpu.TABLE_NAME} (the table) into the directory DIR")
    p.add_argument("--plot", type=Path, default=None, metavar="PATH.png",
                   help="draw samples/s against batch size (log-log, one line per backend) "
                        "to PATH.png; needs matplotlib")
    p.add_argument("--unset-openblas-env", action="store_true",
                   help="when OPENBLAS_CORETYPE or OPENBLAS_L2_SIZE is set, re-run this command "
                        "without them (they can make OpenBLAS pick a slower kernel)")
    p.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    grid_only = {"--backends": args.backends, "--hidden": args.hidden,
                 "--peak-size": args.peak_size, "--plot": args.plot,
                 "--processes": args.processes}
    if args.suite == "gpu":
        given = [flag for flag, value in grid_only.items() if value is not None]
        if given:
            parser.error(f"argument {given[0]}: not used by --suite gpu (it belongs to the "
                         f"throughput grid)")
    elif args.suite == "recipe":
        given = [flag for flag, value in {**grid_only, "--batch-sizes": args.batch_sizes,
                                          "--out-dir": args.out_dir}.items()
                 if value is not None]
        if args.samples != MNIST_TRAIN_SIZE:
            given.append("--samples")
        if given:
            parser.error(f"argument {given[0]}: not used by --suite recipe (it takes "
                         f"--repeat and --json)")
    elif args.suite == "augment":
        given = [flag for flag, value in {"--peak-size": args.peak_size, "--plot": args.plot,
                                          "--processes": args.processes,
                                          "--out-dir": args.out_dir}.items()
                 if value is not None]
        if given:
            parser.error(f"argument {given[0]}: not used by --suite augment")
        for flag, value in (("--backends", args.backends), ("--hidden", args.hidden),
                            ("--batch-sizes", args.batch_sizes)):
            if value is not None and len(value) != 1:
                parser.error(f"argument {flag}: --suite augment takes one value, not "
                             f"{','.join(map(str, value))}")
        if args.backends and ("@" in args.backends[0] or _is_peer_label(args.backends[0])):
            parser.error(f"argument --backends: --suite augment takes a simplenn backend, "
                         f"not {args.backends[0]}")
    elif args.out_dir is not None:
        parser.error("argument --out-dir: only used by --suite gpu (use --json with the "
                     "throughput grid)")
    for flag, path in (("--json", args.json), ("--plot", args.plot)):
        if path is not None and not path.parent.is_dir():
            parser.error(f"argument {flag}: directory {str(path.parent)!r} does not exist")
    if args.plot is not None and args.plot.suffix.lower() != ".png":
        parser.error(f"argument --plot: expected a .png path, got {str(args.plot)!r}")
    if args.unset_openblas_env and sysinfo.openblas_env():
        _reexec_without_openblas_env(argv)  # does not return
    if args.suite == "gpu":
        return common.run_command(PROG, lambda: gpu.run_suite(
            samples=args.samples, epochs=args.repeat or gpu.DEFAULT_EPOCHS,
            batch_sizes=args.batch_sizes or gpu.CUPY_BATCH_SIZES, out_dir=args.out_dir,
            json_path=args.json, command=shlex.join(["python", "-m", "simplenn.bench", *argv]),
            prog=PROG), args.debug)
    if args.suite == "recipe":
        return common.run_command(PROG, lambda: recipe.run_suite(
            repeat=args.repeat or 1, json_path=args.json,
            command=shlex.join(["python", "-m", "simplenn.bench", *argv]), prog=PROG),
            args.debug)
    if args.suite == "augment":
        return common.run_command(PROG, lambda: augment.run_suite(
            backend=args.backends[0] if args.backends else None,
            hidden=args.hidden[0] if args.hidden else augment.HIDDEN,
            batch_size=args.batch_sizes[0] if args.batch_sizes else augment.BATCH_SIZE,
            repeat=args.repeat or DEFAULT_REPEAT, samples=args.samples, json_path=args.json,
            command=shlex.join(["python", "-m", "simplenn.bench", *argv])), args.debug)
    args.batch_sizes = args.batch_sizes or DEFAULT_BATCH_SIZES
    args.hidden = args.hidden or DEFAULT_HIDDEN
    args.repeat = args.repeat or DEFAULT_REPEAT
    args.peak_size = args.peak_size or DEFAULT_PEAK_SIZE
    return common.run_command(PROG, lambda: _bench(args, argv), args.debug)


def _reexec_without_openblas_env(argv: list[str]) -> None:
    """Run this command again in a fresh process without the OpenBLAS variables: OpenBLAS
    reads them once, when NumPy loads it, so unsetting them here would change nothing."""
    found = sysinfo.openblas_env()
    env = {k: v for k, v in os.environ.items() if k not in found}
    env[_UNSET_MARKER] = " ".join(f"{k}={v}" for k, v in found.items())
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "simplenn.bench", *argv], env)


# --------------------------------------------------------------------------------------
# Measuring.
# --------------------------------------------------------------------------------------
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
    flops_per_sample: int
    gflops_per_s: float
    percent_of_peak: float
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


def _is_peer_label(label: str) -> bool:
    return split_label(label)[0] in PEER_NAMES


def _select(requested: tuple[str, ...] | None) -> tuple[list[str], list[Availability]]:
    """The contenders to run and those skipped; a contender named explicitly must run.
    A ``NAME@PATH`` contender counts as available: its process reports what stops it."""
    infos = [Availability(n, True) if split_label(n)[1] is not None else probe_contender(n)
             for n in (requested or contender_names())]
    if requested:
        missing = [i for i in infos if not i.available]
        if missing:
            raise BackendUnavailableError("; ".join(f"{i.name!r} unavailable: {i.reason}"
                                                    for i in missing)
                                          + " (leave it out of --backends)")
    return [i.name for i in infos if i.available], [i for i in infos if not i.available]


def _epoch_loss(name: str, hidden: int, samples: int, train: Any, test: Any,
                make: Any = None) -> float:
    """Mean loss of one epoch from the shared start, with the peer check's settings;
    ``make`` builds the contender (default :func:`make_contender`)."""
    contender = (make or make_contender)(name, hidden, train.X, train.y, test.X)
    return float(contender.train_epoch(LOSS_CHECK_BATCH, samples, lr=LOSS_CHECK_LR))


def _compare(peer: str, hidden: int, samples: int, simplenn_loss: float,
             peer_loss: float) -> PeerCheck:
    rel = abs(peer_loss - simplenn_loss) / max(abs(simplenn_loss), 1e-12)
    return PeerCheck(peer, hidden, LOSS_CHECK_BATCH, LOSS_CHECK_LR, samples, simplenn_loss,
                     peer_loss, rel, LOSS_CHECK_RTOL, bool(rel <= LOSS_CHECK_RTOL))


def check_peer_loss(peer: str, hidden: int, samples: int, train: Any, test: Any) -> PeerCheck:
    """Train one epoch of ``peer`` and of the NumPy backend from the same start (batch
    :data:`LOSS_CHECK_BATCH`, learning rate :data:`LOSS_CHECK_LR`) and compare
    their mean losses within :data:`LOSS_CHECK_RTOL`."""
    return _compare(peer, hidden, samples, _epoch_loss("numpy", hidden, samples, train, test),
                    _epoch_loss(peer, hidden, samples, train, test))


#: Seconds the coordinator waits between two contenders' turns, so that the threads of
#: the one that just ran (OpenBLAS and OpenMP spin-wait after work) go to sleep first.
HANDOFF_PAUSE = 0.2


def _switch_to_tree(root: str) -> tuple[Any, Any]:
    """Make this process's ``simplenn`` the package in checkout ``root``: forget every
    ``simplenn`` module loaded so far, put ``root`` first on ``sys.path`` and import it
    again. Returns that package and its module holding ``make_contender``
    (``simplenn.bench.contenders``, or ``simplenn._workloads`` in the flat layout)."""
    for module in [m for m in sys.modules if m == "simplenn" or m.startswith("simplenn.")]:
        del sys.modules[module]
    sys.path.insert(0, root)
    importlib.invalidate_caches()
    package = importlib.import_module("simplenn")
    expected = os.path.realpath(os.path.join(root, "simplenn", "__init__.py"))
    found = getattr(package, "__file__", None)
    if found is None or os.path.realpath(found) != expected:
        raise BenchmarkError(f"import simplenn loaded {found}, not {expected}")
    try:
        return package, importlib.import_module("simplenn.bench.contenders")
    except ModuleNotFoundError:
        return package, importlib.import_module("simplenn._workloads")


def _worker(inbox: Any, outbox: Any, name: str, hidden_sizes: tuple[int, ...],
            batch_sizes: tuple[int, ...], samples: int, repeat: int) -> None:
    """The body of one contender's process: a peer's loss for the peer check, then every
    cell -- for each width and batch size an untimed warm-up epoch (JIT compilation, GPU
    kernels, caches) and ``repeat`` timed epochs, each only when the coordinator says
    "go" -- then the BLAS libraries this process loaded. Messages go out on ``outbox``
    as ``(name, kind, value)``; an exception goes back as text. (The NumPy reference
    loss is computed by the parent: NumPy's BLAS threads, once they have worked, slow a
    peer's threads down when they share a process.) For a ``NAME@PATH`` contender the
    data and the contender come from the simplenn in ``PATH`` (:func:`_switch_to_tree`),
    and only its ``make_contender``, ``load_mnist``, ``train_epoch`` and ``is_peer`` are
    used; the timing and the turns stay this module's."""
    try:
        base, root = split_label(name)
        if root is None:
            from ..data.datasets import load_mnist

            make = make_contender
        else:
            package, contenders = _switch_to_tree(root)
            load_mnist, make = package.load_mnist, contenders.make_contender

        train, test = load_mnist()
        if _is_peer_label(name):
            inbox.get()  # our turn
            outbox.put((name, "peer_loss", _epoch_loss(base, hidden_sizes[0], samples, train,
                                                       test, make)))
        for hidden in hidden_sizes:
            contender = None
            for bs in batch_sizes:
                seconds = []
                for turn in range(repeat + 1):
                    inbox.get()  # our turn
                    if contender is None:  # built (and compiled) in a turn of its own
                        contender = make(base, hidden, train.X, train.y, test.X)
                    if turn == 0:
                        contender.train_epoch(bs, min(samples, max(2 * bs, WARMUP_SAMPLES)))
                    else:
                        seconds.append(timed(contender.train_epoch, bs, samples)[0])
                    outbox.put((name, "turn_done", None))
                outbox.put((name, "cell", {"name": name, "is_peer": bool(contender.is_peer),
                                           "hidden": hidden, "batch_size": bs,
                                           "samples": samples, "seconds": seconds}))
            del contender
        outbox.put((name, "blas", sysinfo.blas_libraries()))
    except BaseException:  # report everything, KeyboardInterrupt included, then stop
        outbox.put((name, "error", traceback.format_exc()))


def run_grid(names: list[str], hidden_sizes: tuple[int, ...], batch_sizes: tuple[int, ...],
             samples: int, repeat: int, progress: bool = True,
             ) -> tuple[list[dict[str, Any]], list[PeerCheck], list[dict[str, Any]]]:
    """Measure every contender, each in a process of its own, taking turns epoch by epoch.

    Separate processes keep the contenders from slowing each other down: PyTorch's
    OpenMP threads and OpenBLAS's threads both spin-wait after work, and on a machine
    with few cores one library's idle spinning steals the other's cores. Only one
    process works at a time, and for every cell the contenders take turns -- warm-up
    epochs, then timed epoch 1 of each, timed epoch 2 of each, ... -- so a slow spell of
    the machine (other tenants, frequency changes) hits every contender of a cell alike
    and the ratios between them hold. Returns the raw cells, the peer checks and every
    BLAS library the processes loaded.
    """
    from tqdm.auto import tqdm

    from ..data.datasets import load_mnist

    reference_loss = None
    if any(_is_peer_label(n) for n in names):
        train, test = load_mnist()
        reference_loss = _epoch_loss("numpy", hidden_sizes[0], samples, train, test)
    ctx = multiprocessing.get_context("spawn")
    outbox = ctx.Queue()
    inboxes = {name: ctx.Queue() for name in names}
    procs = {name: ctx.Process(target=_worker, args=(inboxes[name], outbox, name, hidden_sizes,
                                                     batch_sizes, samples, repeat), daemon=True)
             for name in names}
    cells: list[dict[str, Any]] = []
    checks: list[PeerCheck] = []
    blas: dict[str, dict[str, Any]] = {}
    bar = tqdm(total=len(names) * len(hidden_sizes) * len(batch_sizes), desc="bench",
               unit="cell", file=sys.stderr, disable=None if progress else True,
               dynamic_ncols=True)

    arrived: Counter[tuple[str, str]] = Counter()

    def wait_for(name: str, kind: str) -> None:
        """Handle messages until ``name`` has sent ``kind`` (perhaps already, while we
        waited for another message)."""
        while not arrived[name, kind]:
            try:
                sender, got, value = outbox.get(timeout=1.0)
            except queue_module.Empty:
                if not procs[name].is_alive():
                    raise BenchmarkError(f"the {name} benchmark process died (exit status "
                                         f"{procs[name].exitcode}) without reporting why")
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

    # A terminated run must not leave its workers behind, still using the cores.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    finished = False
    try:
        for proc in procs.values():
            proc.start()
        for name in names:
            if _is_peer_label(name):
                inboxes[name].put("go")
                wait_for(name, "peer_loss")
        for _ in hidden_sizes:
            for _ in batch_sizes:
                for turn in range(repeat + 1):
                    # rotate who goes first, so no contender always follows the same one
                    order = names[turn % len(names):] + names[:turn % len(names)]
                    for name in order:
                        time.sleep(HANDOFF_PAUSE)
                        inboxes[name].put("go")
                        wait_for(name, "turn_done")
                for name in names:
                    wait_for(name, "cell")
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
    cells.sort(key=lambda c: (hidden_sizes.index(c["hidden"]), batch_sizes.index(c["batch_size"]),
                              names.index(c["name"])))
    return cells, checks, list(blas.values())


def merge_runs(raw: list[dict[str, Any]], more: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The raw cells of two runs of the grid as one: each cell's epoch times together."""
    times = {(r["name"], r["hidden"], r["batch_size"]): r["seconds"] for r in more}
    return [{**r, "seconds": [*r["seconds"], *times[(r["name"], r["hidden"], r["batch_size"])]]}
            for r in raw]


def summarize(raw: list[dict[str, Any]], peak_flops: float) -> list[Cell]:
    """Cells with their rates: the best (shortest) epoch of each gives samples/s, and
    the NumPy backend's rate at the same width and batch size the speed-up."""
    cells = []
    for r in raw:
        flops = training_flops_per_sample(r["hidden"])
        rate = r["samples"] / min(r["seconds"])
        cells.append(Cell(
            name=r["name"], is_peer=r["is_peer"], hidden=r["hidden"], batch_size=r["batch_size"],
            samples=r["samples"], seconds=r["seconds"], samples_per_s=rate,
            median_samples_per_s=r["samples"] / statistics.median(r["seconds"]),
            flops_per_sample=flops, gflops_per_s=rate * flops / 1e9,
            percent_of_peak=100.0 * rate * flops / peak_flops))
    numpy_rate = {(c.hidden, c.batch_size): c.samples_per_s for c in cells if c.name == "numpy"}
    for c in cells:
        base = numpy_rate.get((c.hidden, c.batch_size))
        c.speedup_vs_numpy = c.samples_per_s / base if base else None
    return cells


# --------------------------------------------------------------------------------------
# Reporting.
# --------------------------------------------------------------------------------------
#: The widest contender name the table shows in full; longer ``NAME@PATH`` labels keep
#: ``NAME@`` and the end of ``PATH`` (as long as the shortened names stay distinct).
TABLE_NAME_WIDTH = 40


def _shorten(label: str, width: int) -> str:
    if len(label) <= width:
        return label
    name, path = split_label(label)
    keep = width - len(name) - len("@...")
    if path is not None and keep > 0:
        return f"{name}@...{path[-keep:]}"
    return label[:max(width - 3, 1)] + "..."


def table_names(names: list[str], width: int = TABLE_NAME_WIDTH) -> dict[str, str]:
    """Each contender name as the table shows it: at most ``width`` characters, widened
    until no two names shorten alike."""
    names = list(dict.fromkeys(names))
    while True:
        shown = {n: _shorten(n, width) for n in names}
        if len(set(shown.values())) == len(shown):
            return shown
        width += 8


def format_table(cells: list[Cell]) -> str:
    """A Markdown table: one row per width, batch size and contender; samples/s of the
    best epoch (and the GFLOP/s, % peak and vs numpy of it) and of the median one."""
    header = ("hidden", "batch", "backend", "samples/s", "median", "vs numpy", "GFLOP/s",
              "% peak")
    order = {n: i for i, n in enumerate(dict.fromkeys(c.name for c in cells))}
    shown = table_names(list(order))
    cells = sorted(cells, key=lambda c: (c.hidden, c.batch_size, order[c.name]))
    rows = [(str(c.hidden), str(c.batch_size), shown[c.name] + (" (peer)" if c.is_peer else ""),
             f"{c.samples_per_s:,.0f}", f"{c.median_samples_per_s:,.0f}",
             f"{c.speedup_vs_numpy:.2f}x" if c.speedup_vs_numpy is not None else "-",
             f"{c.gflops_per_s:.1f}", f"{c.percent_of_peak:.1f}%") for c in cells]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    right = {0, 1, 3, 4, 5, 6, 7}

    def line(values: tuple[str, ...]) -> str:
        return "| " + " | ".join(v.rjust(w) if i in right else v.ljust(w)
                                 for i, (v, w) in enumerate(zip(values, widths))) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if i in right else ("-" * (w + 2))
                          for i, w in enumerate(widths)) + "|"
    return "\n".join([line(header), rule, *map(line, rows)])


def _openblas_note(unset: str | None, blas: list[dict[str, Any]]) -> str | None:
    kernels = ", ".join(sorted({str(b["architecture"]) for b in blas
                                if b.get("internal_api") == "openblas" and b.get("architecture")}))
    kernel = f"threadpoolctl shows OpenBLAS kernel {kernels or 'unknown'}"
    if unset:
        return f"note: ran with {unset} unset (--unset-openblas-env); {kernel}"
    found = sysinfo.openblas_env()
    if found:
        names = " ".join(f"{k}={v}" for k, v in found.items())
        return (f"note: {names} is set: it forces OpenBLAS's kernel or cache-size choice and can "
                f"slow it down on this machine ({kernel}); rerun with --unset-openblas-env to "
                f"measure without it")
    return None


def _plot(cells: list[Cell], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    hidden_sizes = sorted({c.hidden for c in cells})
    fig, axes = plt.subplots(1, len(hidden_sizes), figsize=(5.5 * len(hidden_sizes), 4.5),
                             sharey=True, squeeze=False)
    for ax, hidden in zip(axes[0], hidden_sizes):
        for name in dict.fromkeys(c.name for c in cells):
            mine = sorted((c for c in cells if c.name == name and c.hidden == hidden),
                          key=lambda c: c.batch_size)
            if mine:
                ax.plot([c.batch_size for c in mine], [c.samples_per_s for c in mine],
                        marker="o", linestyle="--" if mine[0].is_peer else "-",
                        label=(name.replace("$", r"\$")
                               + (" (peer)" if mine[0].is_peer else "")))
        ax.set_xscale("log", base=2)
        batch_sizes = sorted({c.batch_size for c in cells})
        ax.set_xticks(batch_sizes, [str(b) for b in batch_sizes])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_yscale("log")
        ax.set_xlabel("batch size")
        ax.set_title(f"hidden {hidden}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    axes[0][0].set_ylabel("training samples/s (best of repeats)")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _git_revision(root: str) -> str | None:
    """``git describe --always --dirty`` of the checkout ``root``; None when git can't tell."""
    try:
        done = subprocess.run(["git", "-C", root, "describe", "--always", "--dirty"],
                              capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    revision = done.stdout.strip()
    return revision if done.returncode == 0 and revision else None


def source_trees(names: list[str]) -> list[dict[str, Any]]:
    """The checkouts the contenders come from (this one first) with their git revisions
    and contenders; empty when every contender is this tree's."""
    if all(split_label(n)[1] is None for n in names):
        return []
    here = str(Path(__file__).resolve().parents[2])  # the checkout holding simplenn/
    trees: dict[str, list[str]] = {here: []}
    for n in names:
        trees.setdefault(split_label(n)[1] or here, []).append(n)
    return [{"path": root, "git": _git_revision(root), "contenders": contenders}
            for root, contenders in trees.items() if contenders]


def _matplotlib_missing() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return True
    return False


def _bench(args: argparse.Namespace, argv: list[str]) -> int:
    if args.plot is not None and _matplotlib_missing():
        print(f"{PROG}: error: --plot needs matplotlib, which is not installed; install it with "
              "pip install matplotlib, or leave out --plot", file=sys.stderr)
        return common.EXIT_ERROR
    from .._version import __version__

    names, skipped = _select(args.backends)
    trees = source_trees(names)
    load_before = sysinfo.load_average()
    peaks = [sysinfo.measure_sgemm_peak(args.peak_size)]
    processes = args.processes or 1
    raw, checks, blas = run_grid(names, args.hidden, args.batch_sizes, args.samples,
                                 args.repeat)
    for _ in range(processes - 1):
        raw = merge_runs(raw, run_grid(names, args.hidden, args.batch_sizes, args.samples,
                                       args.repeat)[0])
    peaks.append(sysinfo.measure_sgemm_peak(args.peak_size))  # the better of before/after
    peak = max(peaks, key=lambda p: p["flops_per_s"])
    cells = summarize(raw, peak["flops_per_s"])
    blas = blas or sysinfo.blas_libraries()
    load = f"{load_before} before, {sysinfo.load_average()} after (other processes skew timings)"
    versions = {k: v for k, v in sysinfo.library_versions().items() if v}
    gpus = sysinfo.gpu_names()
    command = shlex.join(["python", "-m", "simplenn.bench", *argv])
    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    note = _openblas_note(os.environ.get(_UNSET_MARKER), blas)

    out = [
        f"simplenn {__version__} benchmark, {date}",
        f"command: {command}",
        f"CPU: {sysinfo.cpu_model()}",
        f"GPU: {'; '.join(gpus) if gpus else 'none'}",
        f"load average (1 min): {load}",
        f"BLAS: {sysinfo.describe_blas(blas)}",
        "versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        f"peak: float32 sgemm {peak['n']}x{peak['n']} with NumPy, best of {2 * peak['repeat']} "
        f"(before and after the grid): "
        f"{peak['flops_per_s'] / 1e9:.1f} GFLOP/s",
        f"work: one training epoch of {args.samples} MNIST images (uint8 -> float32 per batch), "
        f"SGD momentum {TrainConfig.momentum}, lr {THROUGHPUT_LR}, float32; the best and the "
        f"median of {args.repeat * processes} after a warm-up epoch, each backend in "
        f"{'a process of its own' if processes == 1 else f'{processes} processes of its own'}, "
        f"taking turns epoch by epoch; "
        f"FLOPs/sample = 4*{N_INPUTS}*h + 6*h*{N_CLASSES}",
    ]
    out += [f"source tree {t['path']} (git {t['git'] or 'unknown'}): {', '.join(t['contenders'])}"
            for t in trees]
    out += [f"skipped: {i.name}: {i.reason}" for i in skipped]
    if note:
        out.append(note)
    out += ["", format_table(cells), ""]
    for c in checks:
        out.append(f"peer check ({c.peer}, one epoch of {c.samples} images, batch {c.batch_size}, "
                   f"lr {c.lr}, hidden {c.hidden}): mean loss {c.peer_loss:.6f} vs simplenn numpy "
                   f"{c.simplenn_loss:.6f}, relative difference {c.relative_difference:.1e} "
                   f"(tolerance {c.rtol:g}): {'match' if c.match else 'MISMATCH'}")
    print("\n".join(out).rstrip())

    if args.json is not None:
        from ..io.atomic import atomic_write_bytes

        report = {
            "date": date, "command": command, "cpu": sysinfo.cpu_model(), "gpus": gpus,
            "load_average": load,
            "blas": blas, "versions": versions, "openblas_env": sysinfo.openblas_env(),
            "openblas_env_unset": os.environ.get(_UNSET_MARKER), "peak": peak,
            "peak_measurements": peaks,
            "workload": {"samples": args.samples, "repeat": args.repeat, "processes": processes,
                         "lr": THROUGHPUT_LR,
                         "momentum": TrainConfig.momentum, "dtype": "float32",
                         "flops_per_sample": f"4*{N_INPUTS}*h + 6*h*{N_CLASSES}"},
            "skipped": [{"name": i.name, "reason": i.reason} for i in skipped],
            "source_trees": trees,
            "results": [asdict(c) for c in cells],
            "peer_checks": [asdict(c) for c in checks],
        }
        atomic_write_bytes(args.json, (json.dumps(report, indent=2) + "\n").encode())
        print(f"wrote {args.json}")
    if args.plot is not None:
        _plot(cells, args.plot, f"simplenn {__version__}: {sysinfo.cpu_model()}, "
                                f"{date[:10]}")
        print(f"wrote {args.plot}")
    bad = [c.peer for c in checks if not c.match]
    if bad:
        print(f"{PROG}: error: the mean loss of {', '.join(bad)} after one epoch does not match "
              f"simplenn's: the peer is not computing the same thing, so its timings are not "
              f"comparable", file=sys.stderr)
        return common.EXIT_ERROR
    return 0

