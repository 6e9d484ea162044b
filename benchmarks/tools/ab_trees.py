"""Training throughput of two source trees of simplenn, side by side in one run.

    python benchmarks/tools/ab_trees.py --old /tmp/before --new . --control \\
        --backends numpy,numba --hidden 128,512 --batch-sizes 1,8,32,128,512,2048

``--old`` and ``--new`` are checkouts of this repository (for example
``git worktree add /tmp/before REV``). For every backend, hidden width and batch size,
each tree trains one epoch at a time in a process of its own, through the public API
only: ``TwoLayerNet(784, hidden, 10, backend=NAME, seed=0)`` and
``fit(net, (X, y), epochs=1, batch_size=B, ...)``, timed by the ``seconds`` of the
epoch in the returned ``History`` (the training steps alone). A tree's internals can
change freely; ``fit``'s keywords that a tree lacks (``lr``, ``momentum``,
``lr_schedule``, ``eval_train``, ``progress``) are left out for it.

The processes take turns epoch by epoch -- a warm-up epoch each, then timed epoch 1 of
each, timed epoch 2 of each, ... rotating who goes first -- so a slow spell of a shared
machine hits every tree alike. ``--control`` adds a third tree, ``copy``: a copy of the
new tree's package, so identical code measured the same way shows the noise (the
``copy/new`` ratios and, per backend, their band over the grid). ``--processes N``
measures the grid N times, each time in fresh processes (where a process's arrays land
in memory moves its speed), and keeps every epoch.

Each cell is printed as it is measured; at the end a Markdown table gives, per cell,
the best and median samples/s of each tree, ``new/old`` (above 1: the new tree is
faster) and ``copy/new``, and whether ``new/old`` lies below, within or above the
control band. ``--json PATH`` keeps every epoch time. Each worker process ends within
a moment of this one's death, however it died. The tool imports no simplenn itself: each
worker imports its tree's, with the tree first on ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

PROG = "python benchmarks/tools/ab_trees.py"
N_INPUTS, N_CLASSES = 784, 10
LR, MOMENTUM, SEED = 0.01, 0.9, 0
#: The untimed warm-up epoch of each cell: compilation, caches (fit's chunk of work).
WARMUP_SAMPLES = 4096
#: Seconds between two turns, so that the threads of the process that just ran
#: (OpenBLAS and OpenMP spin-wait after work) go to sleep first.
HANDOFF_PAUSE = 0.2
#: A worker's seconds between two looks at its parent's process id.
POLL_SECONDS = 0.2
OPENBLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


class ToolError(Exception):
    """A failure worth one line (and the worker's traceback, when one failed)."""


# --------------------------------------------------------------------------------------
# The worker: one tree and one backend, in a process of its own.
# --------------------------------------------------------------------------------------
def _exit_with_parent(parent_pid: int) -> None:
    """End this process (no clean-up) within :data:`POLL_SECONDS` of its parent's death."""
    if os.getppid() != parent_pid:
        os._exit(3)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(POLL_SECONDS)
        os._exit(3)

    threading.Thread(target=watch, daemon=True).start()


def _fit_keywords(fit: Any, batch_size: int) -> dict[str, Any]:
    """The keywords of one constant-rate SGD epoch that this tree's ``fit`` accepts."""
    import inspect

    wanted = {
        "epochs": 1,
        "batch_size": batch_size,
        "lr": LR,
        "momentum": MOMENTUM,
        "lr_schedule": "constant",
        "seed": SEED,
        "eval_train": False,
        "progress": False,
    }
    parameters = inspect.signature(fit).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return wanted
    return {k: v for k, v in wanted.items() if k in parameters or k in ("epochs", "batch_size")}


def _arrays(split: Any) -> tuple[Any, Any]:
    """``(X, y)`` of a data split: a DataSplit-like object or an ``(X, y)`` pair."""
    if hasattr(split, "X") and hasattr(split, "y"):
        return split.X, split.y
    X, y = split
    return X, y


def worker(root: str, backend: str, parent_pid: int) -> int:
    """Serve epochs of ``backend`` from the simplenn in ``root``: one JSON request per line
    on stdin (``{"hidden", "batch_size", "samples"}``), one JSON answer per line
    (``{"seconds", "loss"}`` or ``{"error"}``); the first answer says which simplenn
    was imported. Ends at the end of stdin, or when the parent dies."""
    _exit_with_parent(parent_pid)
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # whatever the tree prints -> stderr

    def answer(value: dict[str, Any]) -> None:
        answers.write(json.dumps(value) + "\n")

    try:
        import simplenn

        found = os.path.realpath(simplenn.__file__)
        expected = os.path.realpath(os.path.join(root, "simplenn", "__init__.py"))
        if found != expected:
            answer({"error": f"import simplenn loaded {found}, not {expected}"})
            return 1
        X, y = _arrays(simplenn.load_mnist()[0])
        answer({"simplenn": found, "version": getattr(simplenn, "__version__", None)})
        net, hidden = None, None
        for line in sys.stdin:
            request = json.loads(line)
            if request["hidden"] != hidden:
                net, hidden = None, request["hidden"]
                net = simplenn.TwoLayerNet(N_INPUTS, hidden, N_CLASSES, backend=backend, seed=SEED)
            n, batch_size = request["samples"], request["batch_size"]
            history = simplenn.fit(net, (X[:n], y[:n]), **_fit_keywords(simplenn.fit, batch_size))
            epoch = history.epochs[-1]
            loss = getattr(epoch, "train_loss", None)
            answer({"seconds": float(epoch.seconds), "loss": None if loss is None else float(loss)})
    except BaseException:  # noqa: BLE001 -- every failure goes back to the coordinator
        answer({"error": traceback.format_exc()})
        return 1
    return 0


# --------------------------------------------------------------------------------------
# The coordinator.
# --------------------------------------------------------------------------------------
@dataclass
class Tree:
    label: str
    root: Path
    git: str | None = None
    simplenn: str | None = None
    version: str | None = None


@dataclass
class Contender:
    tree: Tree
    backend: str
    process: subprocess.Popen | None = None
    stderr: Any = None
    seconds: dict[tuple[int, int], list[float]] = field(default_factory=dict)
    losses: dict[tuple[int, int], list[float | None]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.tree.label}:{self.backend}"

    def start(self, env: dict[str, str]) -> None:
        self.stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 -- closed by stop()
        path = os.pathsep.join([str(self.tree.root), *filter(None, [env.get("PYTHONPATH")])])
        self.process = subprocess.Popen(
            [
                sys.executable,
                os.path.abspath(__file__),
                "--worker",
                str(self.tree.root),
                self.backend,
                str(os.getpid()),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            cwd=self.tree.root,
            env={**env, "PYTHONPATH": path},
        )

    def _fail(self, message: str) -> ToolError:
        self.stderr.seek(0)
        tail = "".join(self.stderr.readlines()[-12:]).rstrip()
        return ToolError(f"{self.label}: {message}" + (f"\n{tail}" if tail else ""))

    def receive(self) -> dict[str, Any]:
        line = self.process.stdout.readline()
        if not line:
            raise self._fail(f"the worker exited (status {self.process.wait()}) without answering")
        value = json.loads(line)
        if "error" in value:
            raise ToolError(f"{self.label}: {value['error'].rstrip()}")
        return value

    def epoch(self, hidden: int, batch_size: int, samples: int) -> dict[str, Any]:
        try:
            self.process.stdin.write(
                json.dumps({"hidden": hidden, "batch_size": batch_size, "samples": samples}) + "\n"
            )
            self.process.stdin.flush()
        except BrokenPipeError:
            raise self._fail("the worker is gone") from None
        return self.receive()

    def stop(self) -> None:
        if self.process is None:
            return
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:
                pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.stderr.close()
        self.process = None


def measure(
    contenders: list[Contender],
    hidden_sizes: tuple[int, ...],
    batch_sizes: tuple[int, ...],
    samples: int,
    repeat: int,
    env: dict[str, str],
    on_cell: Any,
) -> None:
    """One pass over the grid in fresh worker processes, taking turns epoch by epoch;
    appends each timed epoch to its contender and calls ``on_cell(hidden, batch_size)``
    after each cell."""
    try:
        for c in contenders:
            c.start(env)
        for c in contenders:
            ready = c.receive()
            c.tree.simplenn, c.tree.version = ready["simplenn"], ready["version"]
        for hidden in hidden_sizes:
            for batch_size in batch_sizes:
                key = (hidden, batch_size)
                for turn in range(repeat + 1):
                    shift = turn % len(contenders)
                    for c in contenders[shift:] + contenders[:shift]:
                        time.sleep(HANDOFF_PAUSE)
                        if turn == 0:
                            c.epoch(
                                hidden,
                                batch_size,
                                min(samples, max(2 * batch_size, WARMUP_SAMPLES)),
                            )
                            continue
                        done = c.epoch(hidden, batch_size, samples)
                        c.seconds.setdefault(key, []).append(done["seconds"])
                        c.losses.setdefault(key, []).append(done["loss"])
                on_cell(hidden, batch_size)
    finally:
        for c in contenders:
            c.stop()


def _rates(c: Contender, key: tuple[int, int], samples: int) -> tuple[float, float]:
    seconds = c.seconds[key]
    return samples / min(seconds), samples / statistics.median(seconds)


def summarize(
    contenders: list[Contender],
    hidden_sizes: tuple[int, ...],
    batch_sizes: tuple[int, ...],
    samples: int,
) -> list[dict[str, Any]]:
    """One row per backend, width and batch size: each tree's best and median samples/s,
    ``new/old`` and (with the control) ``copy/new`` of both, and where ``new/old`` lies
    against the band of ``copy/new`` (best) over the backend's cells."""
    by = {(c.tree.label, c.backend): c for c in contenders}
    backends = list(dict.fromkeys(c.backend for c in contenders))
    rows = []
    for backend in backends:
        mine = []
        for hidden in hidden_sizes:
            for batch_size in batch_sizes:
                key = (hidden, batch_size)
                row: dict[str, Any] = {
                    "backend": backend,
                    "hidden": hidden,
                    "batch_size": batch_size,
                }
                for label in ("old", "new", "copy"):
                    if (label, backend) in by:
                        best, median = _rates(by[label, backend], key, samples)
                        row[f"{label}_samples_per_s"] = best
                        row[f"{label}_median_samples_per_s"] = median
                row["new_old"] = row["new_samples_per_s"] / row["old_samples_per_s"]
                row["new_old_median"] = (
                    row["new_median_samples_per_s"] / row["old_median_samples_per_s"]
                )
                if "copy_samples_per_s" in row:
                    row["copy_new"] = row["copy_samples_per_s"] / row["new_samples_per_s"]
                    row["copy_new_median"] = (
                        row["copy_median_samples_per_s"] / row["new_median_samples_per_s"]
                    )
                mine.append(row)
        if all("copy_new" in r for r in mine):
            low = min(r["copy_new"] for r in mine)
            high = max(r["copy_new"] for r in mine)
            for r in mine:
                r["control_band"] = [low, high]
                r["against_band"] = (
                    "below" if r["new_old"] < low else "above" if r["new_old"] > high else "within"
                )
        rows += mine
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table (samples/s of the best epoch; ratios best / median)."""
    control = all("copy_new" in r for r in rows)
    header = [
        "backend",
        "hidden",
        "batch",
        "old samples/s",
        "new samples/s",
        "new/old",
        *(["copy/new", "new/old vs band"] if control else []),
    ]
    lines = [
        "| " + " | ".join(header) + " |",
        "|---|" + "---:|" * (len(header) - 2) + ("---|" if control else "---:|"),
    ]
    for r in rows:
        fields = [
            r["backend"],
            str(r["hidden"]),
            str(r["batch_size"]),
            f"{r['old_samples_per_s']:,.0f}",
            f"{r['new_samples_per_s']:,.0f}",
            f"{r['new_old']:.3f} / {r['new_old_median']:.3f}",
        ]
        if control:
            fields += [f"{r['copy_new']:.3f} / {r['copy_new_median']:.3f}", r["against_band"]]
        lines.append("| " + " | ".join(fields) + " |")
    return "\n".join(lines)


def _git(root: Path) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else None


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} logical CPUs)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} logical CPUs)"


# --------------------------------------------------------------------------------------
# Command line.
# --------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{PROG}: error: {message} (see --help)\n")


def _tree(text: str) -> Path:
    root = Path(text).expanduser().resolve()
    if not root.is_dir():
        raise argparse.ArgumentTypeError(f"directory {str(root)!r} does not exist")
    if not (root / "simplenn" / "__init__.py").is_file():
        raise argparse.ArgumentTypeError(
            f"{str(root)!r} has no simplenn/__init__.py (it must be a simplenn checkout)"
        )
    return root


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(dict.fromkeys(int(t) for t in text.split(",") if t.strip()))
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers, got {text!r}"
        )
    return values


def _names(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(t.strip().lower() for t in text.split(",") if t.strip()))
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated backend names, got {text!r}")
    return names


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description=(
            "Time training epochs of two simplenn checkouts side by side, each tree and backend "
            "in a process of its own taking turns epoch by epoch, through TwoLayerNet and fit "
            "only; --control adds a copy of the new tree to show the noise."
        ),
    )
    p.add_argument(
        "--old", type=_tree, required=True, metavar="PATH", help="the checkout to compare against"
    )
    p.add_argument(
        "--new", type=_tree, required=True, metavar="PATH", help="the checkout under test"
    )
    p.add_argument(
        "--control",
        action="store_true",
        help="also time a copy of the new tree's package (tree 'copy'), to show "
        "the noise of identical code",
    )
    p.add_argument(
        "--backends",
        type=_names,
        default=("numpy", "numba"),
        metavar="LIST",
        help="comma-separated backend names (default numpy,numba)",
    )
    p.add_argument(
        "--hidden",
        type=_int_list,
        default=(128, 512),
        metavar="LIST",
        help="hidden widths (default 128,512)",
    )
    p.add_argument(
        "--batch-sizes",
        type=_int_list,
        default=(1, 8, 32, 128, 512, 2048),
        metavar="LIST",
        help="batch sizes (default 1,8,32,128,512,2048)",
    )
    p.add_argument(
        "--samples",
        type=_positive,
        default=60000,
        metavar="N",
        help="training images per timed epoch (default 60000, a full epoch)",
    )
    p.add_argument(
        "--repeat",
        type=_positive,
        default=3,
        metavar="N",
        help="timed epochs per cell and process after a warm-up (default 3)",
    )
    p.add_argument(
        "--processes",
        type=_positive,
        default=1,
        metavar="N",
        help="measure the grid N times, in fresh processes each time (default 1)",
    )
    p.add_argument(
        "--json",
        type=Path,
        default=None,
        metavar="PATH",
        help="also write every epoch time and the trees' revisions to PATH",
    )
    p.add_argument(
        "--unset-openblas-env",
        action="store_true",
        help=f"run the workers without {' and '.join(OPENBLAS_ENV)} (they force "
        f"OpenBLAS's kernel choice)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--worker"]:
        return worker(argv[1], argv[2], int(argv[3]))
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.json is not None and not args.json.parent.is_dir():
        parser.error(f"argument --json: directory {str(args.json.parent)!r} does not exist")
    if args.samples > 60000:
        parser.error(
            f"argument --samples: at most 60000 (the MNIST training set), got {args.samples}"
        )
    env = dict(os.environ)
    found = {k: env[k] for k in OPENBLAS_ENV if k in env}
    if args.unset_openblas_env:
        for k in found:
            del env[k]
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    copy_dir = tempfile.mkdtemp(prefix="ab-trees-copy-") if args.control else None
    try:
        trees = [Tree("old", args.old, _git(args.old)), Tree("new", args.new, _git(args.new))]
        if copy_dir is not None:
            shutil.copytree(
                args.new / "simplenn",
                Path(copy_dir) / "simplenn",
                ignore=shutil.ignore_patterns("__pycache__"),
            )
            trees.append(Tree("copy", Path(copy_dir), trees[1].git))
        return _run(args, argv, trees, env, found)
    except ToolError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        if copy_dir is not None:
            shutil.rmtree(copy_dir, ignore_errors=True)


def _run(
    args: argparse.Namespace,
    argv: list[str],
    trees: list[Tree],
    env: dict[str, str],
    openblas: dict[str, str],
) -> int:
    contenders = [Contender(t, b) for b in args.backends for t in trees]
    command = shlex.join(["python", "benchmarks/tools/ab_trees.py", *argv])
    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    say = _say
    say(f"A/B of source trees, {date}")
    say(f"command: {command}")
    say(f"CPU: {_cpu()}")
    for t in trees:
        say(
            f"tree {t.label}: {t.root} (git {t.git or 'unknown'})"
            + (" -- a copy of the new tree's package" if t.label == "copy" else "")
        )
    if openblas:
        names = " ".join(f"{k}={v}" for k, v in openblas.items())
        say(
            f"note: {names} {'unset for the workers' if args.unset_openblas_env else 'is set'}"
            + ("" if args.unset_openblas_env else " (--unset-openblas-env leaves it out)")
        )
    say(
        f"work: fit() of one epoch of {args.samples} MNIST images, constant lr {LR}, momentum "
        f"{MOMENTUM}, timed by History.epochs[-1].seconds; {args.repeat} timed epochs per "
        f"cell after a warm-up, in {args.processes} process(es) per tree and backend, "
        f"taking turns; samples/s best / median"
    )
    for round_ in range(1, args.processes + 1):
        prefix = f"process {round_}/{args.processes}: " if args.processes > 1 else ""

        def on_cell(hidden: int, batch_size: int, prefix: str = prefix) -> None:
            key = (hidden, batch_size)
            for backend in args.backends:
                parts = []
                for c in (c for c in contenders if c.backend == backend):
                    best, median = _rates(c, key, args.samples)
                    parts.append(f"{c.tree.label} {best:,.0f} / {median:,.0f}")
                say(f"{prefix}hidden {hidden} batch {batch_size} {backend}: " + "  ".join(parts))

        measure(contenders, args.hidden, args.batch_sizes, args.samples, args.repeat, env, on_cell)
    for t in trees:
        say(f"tree {t.label} imported {t.simplenn} (simplenn {t.version})")
    rows = summarize(contenders, args.hidden, args.batch_sizes, args.samples)
    say("")
    say(format_table(rows))
    for backend in args.backends:
        mine = [r for r in rows if r["backend"] == backend]
        if "control_band" in mine[0]:
            low, high = mine[0]["control_band"]
            say(
                f"{backend}: copy/new (best) spans {low:.3f} to {high:.3f} over the grid; "
                f"new/old is below it in {sum(r['against_band'] == 'below' for r in mine)} "
                f"and above it in {sum(r['against_band'] == 'above' for r in mine)} of "
                f"{len(mine)} cells"
            )
        differences = [
            abs(a - b) / max(abs(a), 1e-12)
            for old in contenders
            if (old.tree.label, old.backend) == ("old", backend)
            for new in contenders
            if (new.tree.label, new.backend) == ("new", backend)
            for key in old.losses
            for a, b in zip(old.losses[key], new.losses[key])
            if a is not None and b is not None
        ]
        if differences:
            say(
                f"{backend}: the mean training loss of new against old differs by at most "
                f"{max(differences):.1e} (relative) over the timed epochs"
            )
    if args.json is not None:
        report = {
            "tool": "ab_trees",
            "date": date,
            "command": command,
            "cpu": _cpu(),
            "trees": [
                {
                    "label": t.label,
                    "path": str(t.root),
                    "git": t.git,
                    "simplenn": t.simplenn,
                    "version": t.version,
                }
                for t in trees
            ],
            "openblas_env": openblas,
            "openblas_env_unset": bool(args.unset_openblas_env),
            "workload": {
                "samples": args.samples,
                "repeat": args.repeat,
                "processes": args.processes,
                "lr": LR,
                "momentum": MOMENTUM,
                "timer": "History.epochs[-1].seconds",
            },
            "results": [
                {
                    "tree": c.tree.label,
                    "backend": c.backend,
                    "hidden": h,
                    "batch_size": b,
                    "samples": args.samples,
                    "seconds": s,
                    "losses": c.losses[h, b],
                }
                for c in contenders
                for (h, b), s in c.seconds.items()
            ],
            "summary": rows,
        }
        tmp = args.json.with_name(args.json.name + ".tmp")
        tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, args.json)
        say(f"wrote {args.json}")
    return 0


def _say(line: str) -> None:
    print(line, flush=True)


if __name__ == "__main__":
    sys.exit(main())
