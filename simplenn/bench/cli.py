"""``python -m simplenn.bench``: how fast each backend (and peer) trains on this machine.

Four suites, chosen by ``--suite``:

- ``throughput`` (the default): one training epoch of each contender over a grid of
  hidden widths and batch sizes, with samples/s, the speed-up over the NumPy backend and
  the roofline (dense-equivalent GFLOP/s and its share of the sgemm peak measured in the
  same run); a quick grid by default, the full one with ``--grid full``. See
  :mod:`simplenn.bench.throughput`.
- ``gpu``: time per epoch of the GPU backend with and without CUDA graphs, beside numba
  and PyTorch CUDA (:mod:`simplenn.bench.gpu`).
- ``recipe``: whole processes, ``python -m simplenn.train`` with an empty and a warm Numba
  cache, and the same recipe in PyTorch and scikit-learn, to the final test accuracy
  (:mod:`simplenn.bench.recipe`).
- ``augment``: an epoch with each augmentation (:mod:`simplenn.bench.augment`).

Comparing two source trees is a tool outside the package: ``benchmarks/tools/ab_trees.py``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from ..cli import common
from ..errors import SimplennError
from . import augment, gpu, recipe, sysinfo, throughput
from .contenders import PEER_NAMES, contender_names
from .throughput import GRIDS, MNIST_TRAIN_SIZE, SKIP_ENV
from .workloads import MOMENTUM, N_CLASSES, N_INPUTS, THROUGHPUT_LR

PROG = common.invoked_as("simplenn.bench")
DEFAULT_REPEAT = 3
DEFAULT_PEAK_SIZE = 2048
#: The suites --suite chooses from; the first is the default.
SUITES = ("throughput", "gpu", "recipe", "augment")
#: The measured peak may change between before and after the grid by this share before
#: the report warns that the machine was busy.
PEAK_CHANGE_WARNING = 0.10


# --------------------------------------------------------------------------------------
# Command line.
# --------------------------------------------------------------------------------------
def _int_list(text: str) -> tuple[int, ...]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated list of positive integers, got {text!r}"
        )
    values = tuple(common.positive_int(t) for t in items)
    return tuple(dict.fromkeys(values))


def _contender_list(text: str) -> tuple[str, ...]:
    items = [t.strip().lower() for t in text.split(",") if t.strip()]
    known = contender_names()
    unknown = [t for t in items if t not in known]
    if not items or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown backend or peer {', '.join(map(repr, unknown)) or repr(text)}; valid names "
            f"are: {', '.join(known)}"
        )
    return tuple(dict.fromkeys(items))


def _samples(text: str) -> int:
    value = common.positive_int(text)
    if value > MNIST_TRAIN_SIZE:
        raise argparse.ArgumentTypeError(
            f"at most {MNIST_TRAIN_SIZE} (the MNIST training set), got {value}"
        )
    return value


def _grid_help() -> str:
    return "; ".join(f"{g.name}: {g.describe()}" for g in GRIDS.values())


def build_parser() -> common.ArgumentParser:
    quick, full = GRIDS["quick"], GRIDS["full"]
    p = common.ArgumentParser(
        prog=PROG,
        description=(
            "Time one training epoch of each backend (and of PyTorch, when installed) over a "
            "grid of hidden widths and batch sizes, and print each cell as it is measured: "
            "samples/s, the speed-up over the NumPy backend, and the roofline, the cell's "
            "dense-equivalent GFLOP/s and its share of this machine's float32 sgemm peak "
            "measured in the same run (above 100%: less arithmetic than the dense products) "
            f"(--suite throughput, the default; the quick grid, {quick.describe()}, unless "
            f"--grid full: {full.describe()}). --suite gpu times the GPU backend instead: "
            f"ms per epoch of cupy at batch {'/'.join(map(str, gpu.CUPY_BATCH_SIZES))} with "
            f"and without CUDA graphs, numba at batch {gpu.NUMBA_BATCH} and PyTorch CUDA "
            f"eager at batch {gpu.TORCH_BATCH}; what can't run here is skipped with the "
            "reason, so without a GPU it is a smoke test that times numba alone. --suite recipe "
            "times whole processes from start to final test accuracy: python -m simplenn.train "
            "(numba) with an empty, then a warm Numba cache (NUMBA_CACHE_DIR set to a new "
            "temporary directory; the user's cache is not touched), and the same recipe as a "
            "PyTorch script and as scikit-learn's MLPClassifier, when installed. --suite augment "
            f"times a training epoch (hidden {augment.HIDDEN}, batch {augment.BATCH_SIZE} unless "
            "given) with each augmentation, none, affine and elastic, taking turns."
        ),
    )
    p.add_argument(
        "--suite",
        choices=SUITES,
        default=SUITES[0],
        help="throughput: the grid of backends, batch sizes and widths (default); "
        "gpu: time per epoch of the GPU backend, written to --out-dir "
        "(--backends, --skip-backends, --grid, --hidden, --peak-size and "
        "--plot are the grid's only); "
        "recipe: wall time and test accuracy of whole training processes: "
        "simplenn's first run (cold Numba cache) against its second (warm), "
        "and against PyTorch and scikit-learn (takes --repeat and --json only); "
        "augment: the epoch time with each --augment of the train command, on "
        "one backend (--backends NAME, default auto's pick; one --hidden and "
        "--batch-sizes value; --repeat turns, default 3)",
    )
    p.add_argument(
        "--grid",
        choices=tuple(GRIDS),
        default=None,
        help=f"the cells and the work of each: {_grid_help()} (default quick); "
        "--hidden, --batch-sizes, --samples and --repeat override its values",
    )
    p.add_argument(
        "--backends",
        type=_contender_list,
        default=None,
        metavar="LIST",
        help=f"comma-separated, from {','.join(contender_names())} (default: every one "
        "that runs here, less --skip-backends; the others are listed with "
        "the reason)",
    )
    p.add_argument(
        "--skip-backends",
        type=_contender_list,
        default=None,
        metavar="LIST",
        help=f"leave these backends or peers out of the default set, comma-separated "
        f"(default: the environment variable {SKIP_ENV}, same form)",
    )
    p.add_argument(
        "--batch-sizes",
        type=_int_list,
        default=None,
        metavar="LIST",
        help=f"comma-separated (default: the grid's; with --suite gpu the cupy "
        f"backend's, default {','.join(map(str, gpu.CUPY_BATCH_SIZES))})",
    )
    p.add_argument(
        "--hidden",
        type=_int_list,
        default=None,
        metavar="LIST",
        help="hidden widths, comma-separated (default: the grid's)",
    )
    p.add_argument(
        "--repeat",
        type=common.positive_int,
        default=None,
        help=f"timed epochs per cell after one warm-up; the best counts (default: "
        f"the grid's; with --suite gpu per configuration, the median counts, "
        f"default {gpu.DEFAULT_EPOCHS}; with --suite recipe the turns of "
        f"whole runs, the best wall time counts, default 1; with --suite "
        f"augment the turns, default {DEFAULT_REPEAT})",
    )
    p.add_argument(
        "--samples",
        type=_samples,
        default=None,
        help=f"training images per timed epoch, from the MNIST training set "
        f"(default: the grid's; {MNIST_TRAIN_SIZE}, a full epoch, with "
        f"--suite gpu and augment)",
    )
    p.add_argument(
        "--peak-size",
        type=common.positive_int,
        default=None,
        metavar="N",
        help=f"measure the machine's peak with an N x N float32 matrix product "
        f"(default {DEFAULT_PEAK_SIZE})",
    )
    p.add_argument(
        "--json",
        type=Path,
        default=None,
        metavar="PATH",
        help="also write every measurement and the system description to PATH",
    )
    p.add_argument(
        "--out-dir",
        type=common.existing_dir,
        default=None,
        metavar="DIR",
        help=f"--suite gpu only: write {gpu.JSON_NAME} (every measurement, as "
        f"--json) and {gpu.TABLE_NAME} (the table) into the directory DIR",
    )
    p.add_argument(
        "--plot",
        type=Path,
        default=None,
        metavar="PATH.png",
        help="draw samples/s against batch size (log-log, one line per backend) "
        "to PATH.png; needs matplotlib",
    )
    p.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    return p


def _check_suite_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit 2 with one line for a flag the chosen suite does not take."""
    grid_only = {
        "--backends": args.backends,
        "--skip-backends": args.skip_backends,
        "--grid": args.grid,
        "--hidden": args.hidden,
        "--peak-size": args.peak_size,
        "--plot": args.plot,
    }
    if args.suite == "gpu":
        given = [flag for flag, value in grid_only.items() if value is not None]
        if given:
            parser.error(
                f"argument {given[0]}: not used by --suite gpu (it belongs to the throughput grid)"
            )
    elif args.suite == "recipe":
        given = [
            flag
            for flag, value in {
                **grid_only,
                "--batch-sizes": args.batch_sizes,
                "--samples": args.samples,
                "--out-dir": args.out_dir,
            }.items()
            if value is not None
        ]
        if given:
            parser.error(
                f"argument {given[0]}: not used by --suite recipe (it takes --repeat and --json)"
            )
    elif args.suite == "augment":
        given = [
            flag
            for flag, value in {
                "--skip-backends": args.skip_backends,
                "--grid": args.grid,
                "--peak-size": args.peak_size,
                "--plot": args.plot,
                "--out-dir": args.out_dir,
            }.items()
            if value is not None
        ]
        if given:
            parser.error(f"argument {given[0]}: not used by --suite augment")
        for flag, value in (
            ("--backends", args.backends),
            ("--hidden", args.hidden),
            ("--batch-sizes", args.batch_sizes),
        ):
            if value is not None and len(value) != 1:
                parser.error(
                    f"argument {flag}: --suite augment takes one value, not "
                    f"{','.join(map(str, value))}"
                )
        if args.backends and args.backends[0] in PEER_NAMES:
            parser.error(
                f"argument --backends: --suite augment takes a simplenn backend, "
                f"not {args.backends[0]}"
            )
    else:
        if args.out_dir is not None:
            parser.error(
                "argument --out-dir: only used by --suite gpu (use --json with the throughput grid)"
            )
        if args.skip_backends is not None and args.backends is not None:
            parser.error(
                "argument --skip-backends: not with --backends (it leaves backends "
                "out of the default set)"
            )
    for flag, path in (("--json", args.json), ("--plot", args.plot)):
        if path is not None and not path.parent.is_dir():
            parser.error(f"argument {flag}: directory {str(path.parent)!r} does not exist")
    if args.plot is not None and args.plot.suffix.lower() != ".png":
        parser.error(f"argument --plot: expected a .png path, got {str(args.plot)!r}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_suite_flags(parser, args)
    command = shlex.join(["python", "-m", "simplenn.bench", *argv])
    if args.suite == "gpu":
        return common.run_command(
            PROG,
            lambda: gpu.run_suite(
                samples=args.samples or MNIST_TRAIN_SIZE,
                epochs=args.repeat or gpu.DEFAULT_EPOCHS,
                batch_sizes=args.batch_sizes or gpu.CUPY_BATCH_SIZES,
                out_dir=args.out_dir,
                json_path=args.json,
                command=command,
                prog=PROG,
            ),
            args.debug,
        )
    if args.suite == "recipe":
        return common.run_command(
            PROG,
            lambda: recipe.run_suite(
                repeat=args.repeat or 1, json_path=args.json, command=command, prog=PROG
            ),
            args.debug,
        )
    if args.suite == "augment":
        return common.run_command(
            PROG,
            lambda: augment.run_suite(
                backend=args.backends[0] if args.backends else None,
                hidden=args.hidden[0] if args.hidden else augment.HIDDEN,
                batch_size=args.batch_sizes[0] if args.batch_sizes else augment.BATCH_SIZE,
                repeat=args.repeat or DEFAULT_REPEAT,
                samples=args.samples or MNIST_TRAIN_SIZE,
                json_path=args.json,
                command=command,
            ),
            args.debug,
        )
    grid = GRIDS[args.grid or "quick"]
    cells = throughput.Grid(
        grid.name,
        args.hidden or grid.hidden,
        args.batch_sizes or grid.batch_sizes,
        args.samples or grid.samples,
        args.repeat or grid.repeat,
    )
    return common.run_command(PROG, lambda: _bench(args, cells, command), args.debug)


# --------------------------------------------------------------------------------------
# The throughput suite's report.
# --------------------------------------------------------------------------------------
def _skipped_by_request(args: argparse.Namespace) -> tuple[dict[str, str], list[str]]:
    """The contenders to leave out of the default set, with why, and the notes to print."""
    if args.backends is not None:
        return {}, []
    if args.skip_backends is not None:
        return {n: "left out by --skip-backends" for n in args.skip_backends}, []
    known, unknown = throughput.skip_from_env()
    notes = (
        [
            (
                f"note: {SKIP_ENV} names {', '.join(map(repr, unknown))}, not a backend or "
                f"peer here (valid names: {', '.join(contender_names())})"
            )
        ]
        if unknown
        else []
    )
    return {n: f"left out by {SKIP_ENV}" for n in known}, notes


def _openblas_note(blas: list[dict]) -> str | None:
    found = sysinfo.openblas_env()
    if not found:
        return None
    kernels = ", ".join(
        sorted(
            {
                str(b["architecture"])
                for b in blas
                if b.get("internal_api") == "openblas" and b.get("architecture")
            }
        )
    )
    names = " ".join(f"{k}={v}" for k, v in found.items())
    unset = " ".join(f"-u {k}" for k in found)
    return (
        f"note: {names} is set: it forces OpenBLAS's kernel or cache-size choice and can "
        f"slow it down on this machine (threadpoolctl shows OpenBLAS kernel "
        f"{kernels or 'unknown'}); to measure without it: env {unset} {PROG} ..."
    )


def _say(line: str = "") -> None:
    """Print a line of the report at once, above the progress bar."""
    from tqdm.auto import tqdm

    tqdm.write(line, file=sys.stdout)
    sys.stdout.flush()


def _bench(args: argparse.Namespace, grid: throughput.Grid, command: str) -> int:
    if args.plot is not None and _matplotlib_missing():
        print(
            f"{PROG}: error: --plot needs matplotlib, which is not installed; install it with "
            "pip install matplotlib, or leave out --plot",
            file=sys.stderr,
        )
        return common.EXIT_ERROR
    from .._version import __version__

    skip, notes = _skipped_by_request(args)
    names, skipped = throughput.select(args.backends, skip)
    if not names:
        raise SimplennError(
            f"every backend is left out (--skip-backends or {SKIP_ENV}): nothing to measure"
        )
    peak_size = args.peak_size or DEFAULT_PEAK_SIZE
    load_before = sysinfo.load_average()
    peak = sysinfo.measure_sgemm_peak(peak_size)
    versions = {k: v for k, v in sysinfo.library_versions().items() if v}
    gpus = sysinfo.gpu_names()
    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    flops = f"4*{N_INPUTS}*h + 6*h*{N_CLASSES}"
    full = GRIDS["full"]
    full_hint = (
        f"the full grid ({full.describe()}; tens of minutes on a few cores): {PROG} --grid full"
    )
    _say(f"simplenn {__version__} benchmark, {date}")
    for line in [
        f"command: {command}",
        f"CPU: {sysinfo.cpu_model()}",
        f"GPU: {'; '.join(gpus) if gpus else 'none'}",
        "versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        (
            f"peak: float32 sgemm {peak['n']}x{peak['n']} with NumPy, best of {peak['repeat']}, "
            f"before the grid: {peak['flops_per_s'] / 1e9:.1f} GFLOP/s"
        ),
        (
            f"work: one training epoch of {grid.samples} MNIST images (uint8 -> float32 per "
            f"batch), SGD momentum {MOMENTUM}, lr {THROUGHPUT_LR}, float32; the best "
            f"and the median of {grid.repeat} after a warm-up epoch, each backend in a process "
            f"of its own, taking turns epoch by epoch"
        ),
        (
            f"roofline: dense GFLOP/s counts the dense products' {flops} FLOPs per sample, "
            f"whatever a backend computes; above 100% of the peak, a cell did less arithmetic "
            f"than the dense products need"
        ),
        f"grid: {grid.name} ({grid.describe()})"
        + (f"; {full_hint}" if grid.name == "quick" else ""),
        *[f"skipped: {i.name}: {i.reason}" for i in skipped],
        *notes,
        "",
    ]:
        _say(line)
    widths = throughput.table_widths([n + (" (peer)" if n in PEER_NAMES else "") for n in names])
    for line in throughput.table_head(widths):
        _say(line)

    def show(raw: list[dict]) -> None:
        for line in throughput.table_rows(throughput.summarize(raw, peak["flops_per_s"]), widths):
            _say(line)

    raw, checks, blas = throughput.run_grid(
        names, grid.hidden, grid.batch_sizes, grid.samples, grid.repeat, on_cells=show
    )
    after = sysinfo.measure_sgemm_peak(peak_size)
    cells = throughput.summarize(raw, peak["flops_per_s"])
    blas = blas or sysinfo.blas_libraries()
    load = f"{load_before} before, {sysinfo.load_average()} after (other processes skew timings)"
    out = [
        "",
        f"load average (1 min): {load}",
        f"BLAS: {sysinfo.describe_blas(blas)}",
        (
            f"peak after the grid: {after['flops_per_s'] / 1e9:.1f} GFLOP/s (the table's "
            f"share is of the peak before)"
        ),
    ]
    change = after["flops_per_s"] / peak["flops_per_s"] - 1
    if abs(change) > PEAK_CHANGE_WARNING:
        out.append(
            f"note: the peak changed by {100 * change:+.0f}% during the run: the "
            f"machine was busy, so the shares of the peak are uncertain"
        )
    note = _openblas_note(blas)
    if note:
        out.append(note)
    for c in checks:
        out.append(
            f"peer check ({c.peer}, one epoch of {c.samples} images, batch {c.batch_size}, "
            f"lr {c.lr}, hidden {c.hidden}): mean loss {c.peer_loss:.6f} vs simplenn numpy "
            f"{c.simplenn_loss:.6f}, relative difference {c.relative_difference:.1e} "
            f"(tolerance {c.rtol:g}): {'match' if c.match else 'MISMATCH'}"
        )
    if grid.name == "quick":
        out.append(f"this was the quick grid; {full_hint}")
    print("\n".join(out))

    if args.json is not None:
        from ..io.atomic import atomic_write_bytes

        report = {
            "date": date,
            "command": command,
            "cpu": sysinfo.cpu_model(),
            "gpus": gpus,
            "load_average": load,
            "blas": blas,
            "versions": versions,
            "openblas_env": sysinfo.openblas_env(),
            "peak": peak,
            "peak_measurements": [peak, after],
            "grid": grid.name,
            "workload": {
                "samples": grid.samples,
                "repeat": grid.repeat,
                "lr": THROUGHPUT_LR,
                "momentum": MOMENTUM,
                "dtype": "float32",
                "flops_per_sample": flops,
            },
            "skipped": [{"name": i.name, "reason": i.reason} for i in skipped],
            "results": [asdict(c) for c in cells],
            "peer_checks": [asdict(c) for c in checks],
        }
        atomic_write_bytes(args.json, (json.dumps(report, indent=2) + "\n").encode())
        print(f"wrote {args.json}")
    if args.plot is not None:
        _plot(cells, args.plot, f"simplenn {__version__}: {sysinfo.cpu_model()}, {date[:10]}")
        print(f"wrote {args.plot}")
    bad = [c.peer for c in checks if not c.match]
    if bad:
        print(
            f"{PROG}: error: the mean loss of {', '.join(bad)} after one epoch does not match "
            f"simplenn's: the peer is not computing the same thing, so its timings are not "
            f"comparable",
            file=sys.stderr,
        )
        return common.EXIT_ERROR
    return 0


def _plot(cells: list[throughput.Cell], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    hidden_sizes = sorted({c.hidden for c in cells})
    fig, axes = plt.subplots(
        1, len(hidden_sizes), figsize=(5.5 * len(hidden_sizes), 4.5), sharey=True, squeeze=False
    )
    for ax, hidden in zip(axes[0], hidden_sizes):
        for name in dict.fromkeys(c.name for c in cells):
            mine = sorted(
                (c for c in cells if c.name == name and c.hidden == hidden),
                key=lambda c: c.batch_size,
            )
            if mine:
                ax.plot(
                    [c.batch_size for c in mine],
                    [c.samples_per_s for c in mine],
                    marker="o",
                    linestyle="--" if mine[0].is_peer else "-",
                    label=name + (" (peer)" if mine[0].is_peer else ""),
                )
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


def _matplotlib_missing() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return True
    return False
