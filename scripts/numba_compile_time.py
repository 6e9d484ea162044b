"""What each command's first run compiles with Numba, function by function, and what
loading it from the cache costs.

Every command runs in a fresh process of its own with ``NUMBA_CACHE_DIR`` set to a new,
empty directory (cold: everything compiles and is written there), then in another fresh
process with that directory (cached: everything loads). Two ways to run a command:

- by stage (the default): the process calls the public entry points the command calls,
  in its order, and times each. For the ``train`` commands: importing simplenn and the
  numba backend (``TwoLayerNet(..., backend="numba")``); the warm-up as
  ``simplenn/cli/train.py`` calls it (``warm_up`` on ``example_inputs()``, with the
  command's optimizer, batch size and augmentation); then the run itself, ``fit`` for
  one epoch on 256 training images with 256 test images, which should compile nothing:
  what it compiles, the warm-up missed (``--val-split`` holds out part of the 256).
  For ``evaluate`` and ``predict`` (with ``--backend numba``; on their default backend,
  numpy, they compile nothing): ``predict_proba`` on inputs like theirs (the read-only
  test images; writable rows of uint8 pixels, as ``predict`` stacks the digits it
  reads).
- ``--whole``: the command itself, ``python -m simplenn.train --backend numba --epochs 1``
  and so on, timed from outside (wall clock), with the compile time it prints; what it
  compiles is split into inside and outside the warm-up.

Either way numba's event API (``numba.core.event``, documented in numba's developer
manual; this script is its only user) reports each function numba compiles and how long
that took. The listing shows the functions compiled at the top, each with its seconds
including the functions it is the first to need (``+N``: how many); ``--all`` lists
every function with its own seconds. A cached run that lists no function loaded
everything from the cache. The first compilation of a process also pays for numba's own
set-up (its typing and target registries; with SciPy installed, numba imports
``scipy.linalg`` then), which loading from the cache pays as well.

    python scripts/numba_compile_time.py                   # every command, by stage
    python scripts/numba_compile_time.py --whole           # every command, whole
    python scripts/numba_compile_time.py --commands train,batch-1 --all --json out.json

It prints what a results file needs: the command line, the date, the CPU, the load
average before and after, the versions, then one block per command.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import runpy
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

#: Images the by-stage run trains and evaluates on (enough for a few batches).
RUN_IMAGES = 256


@dataclass(frozen=True)
class Command:
    """A user command: its key, its arguments after ``python -m`` (``MODEL`` and
    ``IMAGE`` stand for files the script writes), and for ``train`` commands the
    :class:`~simplenn.core.training.TrainConfig` settings and dtype it sets."""

    key: str
    argv: tuple[str, ...]
    train: dict[str, Any] | None = None
    dtype: str = "float32"
    inputs: str = ""

    def shown(self, epochs: int | None = None) -> str:
        argv = list(self.argv)
        if self.train is not None and epochs is not None:
            argv += ["--epochs", str(epochs)]
        return "python -m " + " ".join(argv)


TRAIN = ("simplenn.train", "--backend", "numba")
COMMANDS = (
    Command("train", TRAIN, {}),
    Command("augment-elastic", (*TRAIN, "--augment", "elastic"), {"augment": "elastic"}),
    Command("augment-affine", (*TRAIN, "--augment", "affine"), {"augment": "affine"}),
    Command("batch-1", (*TRAIN, "--batch-size", "1"), {"batch_size": 1}),
    Command("float64", (*TRAIN, "--dtype", "float64"), {}, dtype="float64"),
    Command("adam", (*TRAIN, "--optimizer", "adam"), {"optimizer": "adam"}),
    Command("val-split", (*TRAIN, "--val-split", "0.1"), {"validation_fraction": 0.1}),
    Command("evaluate", ("simplenn.evaluate", "MODEL", "--backend", "numba"), inputs="test"),
    Command(
        "predict", ("simplenn.predict", "MODEL", "IMAGE", "--backend", "numba"), inputs="digits"
    ),
)
BY_KEY = {c.key: c for c in COMMANDS}


# --------------------------------------------------------------------------------------
# In the measured process: numba's compile events.
# --------------------------------------------------------------------------------------
def _short_types(text: str) -> str:
    """Numba's argument types, shorter: ``Array(uint8, 2, 'C', True, aligned=True)`` and
    ``readonly array(uint8, 2d, C)`` become ``readonly uint8[2d C]``."""
    text = re.sub(
        r"Array\((\w+), (\d+), '(\w)', (True|False), aligned=True\)",
        lambda m: f"{'readonly ' if m[4] == 'True' else ''}{m[1]}[{m[2]}d {m[3]}]",
        text,
    )
    return re.sub(r"(readonly )?array\((\w+), (\d+)d, (\w)\)", r"\1\2[\3d \4]", text)


class CompileRecorder:
    """Records every compilation numba makes (its ``numba:compile`` events): the
    function, its argument types, its seconds with and without the compilations it
    started (``seconds``, ``self_seconds``), its nesting ``depth`` and the ``phase``
    set when it began."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.phase = "the run"
        self.available = False
        self._local = threading.local()

    def install(self) -> bool:
        """Listen from now on; False where numba or its event API is missing."""
        try:
            from numba.core import event
        except ImportError:
            return False
        recorder = self

        class Listener(event.Listener):
            def on_start(self, ev: Any) -> None:
                recorder._start()

            def on_end(self, ev: Any) -> None:
                recorder._end(ev.data)

        event.register("numba:compile", Listener())
        self.available = True
        return True

    def _stack(self) -> list[list[float]]:
        if not hasattr(self._local, "stack"):
            self._local.stack = []
        return self._local.stack

    def _start(self) -> None:
        self._stack().append([time.perf_counter(), 0.0, 0, self.phase])

    def _end(self, data: dict[str, Any]) -> None:
        stack = self._stack()
        start, inner, nested, phase = stack.pop()
        seconds = time.perf_counter() - start
        if stack:
            stack[-1][1] += seconds
            stack[-1][2] += 1 + nested
        fn = getattr(data["dispatcher"], "py_func", None)
        name = f"{fn.__module__}.{fn.__qualname__}" if fn is not None else str(data["dispatcher"])
        self.records.append(
            {
                "function": name.removeprefix("simplenn."),
                "signature": _short_types(", ".join(map(str, data["args"]))),
                "seconds": round(seconds, 4),
                "self_seconds": round(seconds - inner, 4),
                "nested": nested,
                "depth": len(stack),
                "phase": phase,
            }
        )

    def take(self) -> list[dict[str, Any]]:
        """The records so far, emptied."""
        out, self.records = self.records, []
        return out


# --------------------------------------------------------------------------------------
# In the measured process: the stages of a command (--child KEY).
# --------------------------------------------------------------------------------------
IMPORT_STAGE = "import simplenn and the numba backend"


def _stages(command: Command, net: Any) -> list[tuple[str, Any]]:
    """The command's stages after the import, as (description, function) pairs run in
    order on ``net``; the data they need is loaded here, before any clock starts."""
    import numpy as np

    from simplenn.data.datasets import load_mnist

    if command.train is not None:
        from simplenn.core.training import TrainConfig, fit, warm_up
        from simplenn.data.datasets import example_inputs

        config = TrainConfig(**command.train)
        train, test = load_mnist()
        n = RUN_IMAGES

        def warm() -> None:  # as simplenn/cli/train.py calls it
            warm_up(
                net.ops,
                example_inputs(),
                optimizer=config.optimizer,
                batch_size=config.batch_size,
                augment=config.augment,
                gradients=False,
            )

        def run() -> None:
            fit(
                net,
                (train.X[:n], train.y[:n]),
                (test.X[:n], test.y[:n]),
                epochs=1,
                batch_size=config.batch_size,
                optimizer=config.optimizer,
                augment=config.augment,
                validation_fraction=config.validation_fraction,
            )

        return [
            ("the warm-up, as the command calls it", warm),
            (f"the run: fit, 1 epoch of {n} images, {n} test images", run),
        ]
    if command.inputs == "test":
        X = load_mnist()[1].X[:RUN_IMAGES]
        return [(f"predict_proba on {RUN_IMAGES} test images", lambda: net.predict_proba(X))]
    rows = np.stack([np.zeros(784, np.uint8) for _ in range(2)])  # as predict stacks them
    return [("predict_proba on 2 digits read", lambda: net.predict_proba(rows))]


def child_stages(key: str, out: Path) -> int:
    """Run a command's stages in this process and write what each took to ``out``."""
    command = BY_KEY[key]
    start = time.perf_counter()
    recorder = CompileRecorder()
    recorder.install()  # imports numba
    from simplenn import TwoLayerNet

    net = TwoLayerNet(784, 256, 10, backend="numba", dtype=command.dtype, seed=0)
    results = [
        {
            "stage": IMPORT_STAGE,
            "seconds": round(time.perf_counter() - start, 4),
            "compiled": recorder.take(),
        }
    ]
    for name, fn in _stages(command, net):
        begin = time.perf_counter()
        fn()
        seconds = time.perf_counter() - begin
        results.append({"stage": name, "seconds": round(seconds, 4), "compiled": recorder.take()})
    out.write_text(json.dumps({"events": recorder.available, "stages": results}))
    return 0


# --------------------------------------------------------------------------------------
# In the measured process: a whole command (--run-module MODULE ARGS...).
# --------------------------------------------------------------------------------------
def child_module(module: str, argv: list[str], out: Path) -> int:
    """Run ``python -m module argv`` in this process, recording what numba compiles
    inside and outside the warm-up of ``simplenn.cli.train`` (when it has one)."""
    recorder = CompileRecorder()
    recorder.install()
    if module == "simplenn.train":
        import simplenn.cli.train as cli_train

        warm_up = getattr(cli_train, "warm_up", None)
        if warm_up is not None:

            def marked(*args: Any, **kwargs: Any) -> Any:
                recorder.phase = "the warm-up"
                try:
                    return warm_up(*args, **kwargs)
                finally:
                    recorder.phase = "after the warm-up"

            cli_train.warm_up = marked
            recorder.phase = "before the warm-up"
    sys.argv = [module, *argv]
    code: Any = 0
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code
    finally:
        out.write_text(json.dumps({"events": recorder.available, "compiled": recorder.take()}))
    return code if isinstance(code, int) else 1


# --------------------------------------------------------------------------------------
# The measuring process.
# --------------------------------------------------------------------------------------
@dataclass
class Measured:
    """One process of a command: its wall time, exit status, what it reported."""

    wall_seconds: float
    returncode: int
    report: dict[str, Any] = field(default_factory=dict)
    compile_line: float | None = None
    error: str = ""


def _env(cache_dir: str) -> dict[str, str]:
    """The children's environment: this simplenn first on the path, Numba's cache on,
    in ``cache_dir``."""
    from simplenn.bench.recipe import base_env

    return {**base_env(), "NUMBA_CACHE_DIR": cache_dir}


def _measure(argv: list[str], cache_dir: str, out: Path) -> Measured:
    from simplenn.bench.recipe import parse_train_output, run_process

    out.unlink(missing_ok=True)
    result = run_process(argv, _env(cache_dir))
    measured = Measured(round(result.wall_seconds, 3), result.returncode)
    if out.exists():
        measured.report = json.loads(out.read_text())
    measured.compile_line = parse_train_output(result.stdout).compile_seconds
    if result.returncode != 0 or not measured.report:
        tail = (result.stderr.strip() or result.stdout.strip()).splitlines()
        measured.error = f"exit status {result.returncode}: {tail[-1] if tail else '(no output)'}"
    return measured


def _files(workdir: Path, need_image: bool) -> tuple[dict[str, str], str]:
    """The model and digit image that ``evaluate`` and ``predict`` read (an untrained
    network: what compiles does not depend on the numbers), and why one is missing."""
    import numpy as np

    import simplenn

    model = workdir / "model.npz"
    simplenn.save_model(simplenn.TwoLayerNet(784, 256, 10, backend="numpy", seed=0), model)
    files = {"MODEL": str(model)}
    if not need_image:
        return files, ""
    try:
        from PIL import Image
    except ImportError:
        return files, "Pillow is not installed; pip install Pillow"
    image = workdir / "digit.png"
    pixels = np.asarray(simplenn.load_mnist()[1].X[0]).reshape(28, 28)
    Image.fromarray(pixels).save(image)
    return {**files, "IMAGE": str(image)}, ""


def _argv(command: Command, whole: bool, epochs: int, files: dict[str, str], out: Path):
    script = str(Path(__file__).resolve())
    if not whole:
        return [sys.executable, script, "--child", command.key, "--child-out", str(out)]
    args = [files.get(a, a) for a in command.argv[1:]]
    if command.train is not None:
        args += ["--epochs", str(epochs)]
    module = command.argv[0]
    return [sys.executable, script, "--run-module", module, "--child-out", str(out), "--", *args]


def measure_command(command: Command, whole: bool, epochs: int, files: dict[str, str]):
    """The command cold (a new, empty cache directory), then cached (that directory)."""
    with tempfile.TemporaryDirectory(prefix="numba-compile-time-") as tmp:
        cache_dir, out = str(Path(tmp) / "cache"), Path(tmp) / "report.json"
        os.mkdir(cache_dir)
        argv = _argv(command, whole, epochs, files, out)
        cold = _measure(argv, cache_dir, out)
        cached = _measure(argv, cache_dir, out) if not cold.error else None
    return cold, cached


# --------------------------------------------------------------------------------------
# Printing.
# --------------------------------------------------------------------------------------
def _function_lines(compiled: list[dict[str, Any]], every: bool, indent: str) -> list[str]:
    """The compiled functions, top-level ones (or with ``every`` all, by their own
    seconds), one line each."""
    if not compiled:
        return [f"{indent}nothing compiled"]
    if every:
        rows = sorted(compiled, key=lambda r: -r["self_seconds"])
        return [
            f"{indent}{r['self_seconds']:6.2f} s  {r['function']} ({r['signature']})" for r in rows
        ]
    lines = []
    for r in (r for r in compiled if r["depth"] == 0):
        signature = r["signature"]
        if len(signature) > 60:
            signature = signature[:57] + "..."
        nested = f" +{r['nested']}" if r["nested"] else ""
        lines.append(f"{indent}{r['seconds']:6.2f} s  {r['function']}{nested} ({signature})")
    return lines


def _totals(compiled: list[dict[str, Any]]) -> str:
    seconds = sum(r["self_seconds"] for r in compiled)
    return f"{len(compiled)} functions, {seconds:.2f} s"


def format_stages(command: Command, cold: Measured, cached: Measured | None, every: bool):
    lines = [f"## {command.shown()}", f"{'stage':<62} {'cold s':>7} {'cached s':>8}"]
    if cold.error:
        return [*lines, f"FAILED: {cold.error}"]
    cached_stages = cached.report.get("stages", []) if cached and not cached.error else []
    every_cold: list[dict[str, Any]] = []
    for i, stage in enumerate(cold.report["stages"]):
        again = cached_stages[i]["seconds"] if i < len(cached_stages) else None
        shown = "-" if again is None else f"{again:.2f}"
        lines.append(f"{stage['stage']:<62} {stage['seconds']:7.2f} {shown:>8}")
        lines += _function_lines(stage["compiled"], every, "    ")
        every_cold += stage["compiled"]
    total_cold = sum(s["seconds"] for s in cold.report["stages"])
    total_cached = sum(s["seconds"] for s in cached_stages) if cached_stages else None
    shown = "-" if total_cached is None else f"{total_cached:.2f}"
    lines.append(f"{'total':<62} {total_cold:7.2f} {shown:>8}")
    recompiled = [r for s in cached_stages for r in s["compiled"]]
    lines.append(
        f"numba compiled {_totals(every_cold)} cold; cached: "
        + ("nothing" if not recompiled else _totals(recompiled) + " compiled again")
        + f"; process wall time {cold.wall_seconds:.2f} s cold, "
        + ("-" if cached is None else f"{cached.wall_seconds:.2f} s cached")
    )
    if cached is not None and cached.error:
        lines.append(f"cached run FAILED: {cached.error}")
    if not cold.report.get("events"):
        lines.append("(numba's event API is not available here: stage times only)")
    return lines


def format_whole(command: Command, cold: Measured, cached: Measured | None, every: bool, epochs):
    lines = [f"## {command.shown(epochs)}"]
    for label, m in (("cold", cold), ("cached", cached)):
        if m is None:
            continue
        if m.error:
            lines.append(f"{label}: FAILED: {m.error}")
            continue
        printed = ""
        if m.compile_line is not None:
            printed = f", it printed a compile time of {m.compile_line:.1f} s"
        compiled = m.report.get("compiled", [])
        lines.append(
            f"{label}: {m.wall_seconds:.2f} s wall{printed}; numba compiled {_totals(compiled)}"
        )
        phases: dict[str, list[dict[str, Any]]] = {}
        for r in compiled:
            phases.setdefault(r["phase"], []).append(r)
        for phase, records in phases.items():
            lines.append(f"  {phase}: {_totals(records)}")
            lines += _function_lines(records, every, "    ")
        if command.train is not None and "after the warm-up" in phases:
            lines.append("  (compiled after the warm-up: the warm-up missed these)")
    return lines


def header(args: argparse.Namespace) -> tuple[list[str], dict[str, Any]]:
    import importlib.metadata
    import platform

    from simplenn.bench import sysinfo

    versions = {"python": platform.python_version()}
    for dist in ("simplenn-backends", "numpy", "numba", "llvmlite", "scipy"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    import simplenn

    versions["simplenn imported from"] = str(Path(simplenn.__file__).parent)
    info = {
        "command": "python scripts/numba_compile_time.py " + " ".join(args.raw_argv),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu": sysinfo.cpu_model(),
        "versions": versions,
        "mode": "whole commands" if args.whole else "by stage",
    }
    lines = [
        f"command: {info['command']}",
        f"date: {info['date']}",
        f"CPU: {info['cpu']}",
        "versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        f"mode: {info['mode']}; each command in a fresh process with an empty "
        "NUMBA_CACHE_DIR (cold), then again with that directory (cached); seconds of "
        "compilation from numba's event API",
    ]
    return lines, info


def _load() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def main(argv: list[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--commands",
        default=",".join(c.key for c in COMMANDS),
        help=f"comma-separated, of {', '.join(BY_KEY)} (default: all)",
    )
    p.add_argument("--whole", action="store_true", help="run each command itself (see above)")
    p.add_argument(
        "--epochs", type=int, default=1, help="--whole: epochs of the train commands (default 1)"
    )
    p.add_argument("--all", action="store_true", help="list every compiled function")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--run-module", help=argparse.SUPPRESS)
    p.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    if "--run-module" in raw:  # the measured command's own flags follow "--"
        split = raw.index("--") if "--" in raw else len(raw)
        args = p.parse_args(raw[:split])
        return child_module(args.run_module, raw[split + 1 :], args.child_out)
    args = p.parse_args(raw)
    if args.child:
        return child_stages(args.child, args.child_out)
    keys = [k.strip() for k in args.commands.split(",") if k.strip()]
    unknown = [k for k in keys if k not in BY_KEY]
    if unknown:
        p.error(f"unknown command(s) {', '.join(unknown)}; choose from {', '.join(BY_KEY)}")
    args.raw_argv = raw

    lines, info = header(args)
    load_before = _load()
    for line in lines:
        print(line, flush=True)
    print(f"load average (1, 5, 15 min) before: {load_before}", flush=True)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="numba-compile-time-files-") as tmp:
        files, missing = {}, ""
        if args.whole and any(BY_KEY[k].inputs for k in keys):
            files, missing = _files(Path(tmp), need_image="predict" in keys)
        for key in keys:
            command = BY_KEY[key]
            print(flush=True)
            if args.whole and "IMAGE" in command.argv and missing:
                print(f"## {command.shown()}\nskipped: {missing}", flush=True)
                results[key] = {"skipped": missing}
                continue
            cold, cached = measure_command(command, args.whole, args.epochs, files)
            block = (
                format_whole(command, cold, cached, args.all, args.epochs)
                if args.whole
                else format_stages(command, cold, cached, args.all)
            )
            print("\n".join(block), flush=True)
            results[key] = {
                "command": command.shown(args.epochs if args.whole else None),
                "cold": vars(cold),
                "cached": None if cached is None else vars(cached),
            }
    load_after = _load()
    print(f"\nload average (1, 5, 15 min) after: {load_after}")
    if args.json is not None:
        report = {**info, "load_average": {"before": load_before, "after": load_after}}
        report["commands"] = results
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    failed = [k for k, r in results.items() if r.get("cold", {}).get("error")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
