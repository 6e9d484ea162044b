"""``python -m simplenn.bench --suite recipe``: first run and time to accuracy, as a user
meets them.

Every contender is a whole process started with :mod:`subprocess`, timed from outside
(wall clock), so interpreter start-up, imports, data loading, compilation and
evaluation all count:

- **simplenn, cold cache**: ``python -m simplenn.train --backend numba`` (the default
  recipe) with ``NUMBA_CACHE_DIR`` pointing at a new, empty directory, so every Numba
  kernel compiles; the user's own cache is neither read nor written;
- **simplenn, warm cache**: the same command again with that directory, now filled by
  the cold run. It is the reference of the "vs simplenn" ratios, and the "time to
  accuracy" of simplenn;
- **PyTorch**: :func:`torch_recipe`, the same recipe as a plain PyTorch script. It runs
  warm every time: PyTorch runs eagerly and has no compile cache to fill, so each of
  its runs is a warm one;
- **scikit-learn**: :func:`sklearn_recipe`, ``MLPClassifier`` with the closest settings.

A cold run is a first run after installing: Numba's cache is the one thing a run
writes and a later run reads (nothing else of simplenn's is cached on disk), and the
cold run's is new and empty. What an install leaves warm stays warm for every
contender alike: Python's bytecode (the ``__pycache__`` ``.pyc`` files of simplenn and
its dependencies, which pip writes when it installs) and the operating system's file
cache.

The product's targets are checked on the best wall times of one run of the suite
(:func:`targets`): the default command with a warm cache takes at most a third of the
PyTorch script's time, both reaching 98% test accuracy (``warm/torch`` at most
:data:`WARM_VS_TORCH_TARGET`), and its first run, with a cold cache, takes no longer
than the PyTorch script (``cold/torch`` at most :data:`COLD_VS_TORCH_TARGET`).

The recipe: 784-256-10 ReLU network, float32, SGD with momentum 0.9, batch 128, peak
learning rate 0.2 with cosine decay over 6 epochs, the bundled MNIST (uint8 / 255), test
accuracy at the end. Each process prints ``test accuracy: X%`` as its last line, which
:func:`parse_train_output` reads, with the compile time ``python -m simplenn.train``
prints and the seconds of its training epochs. With ``--repeat N`` the contenders take
turns N times (a fresh cache directory for each cold run) and the best wall time of each
counts. Without Numba the cold/warm part is skipped and simplenn runs on its default
backend; a peer whose library is not installed is skipped with the reason.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import math
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import lifeline

# The recipe: python -m simplenn.train's defaults (TrainConfig, DEFAULT_HIDDEN).
HIDDEN = 256
EPOCHS = 6
BATCH_SIZE = 128
LR = 0.2
MOMENTUM = 0.9
SEED = 0
#: scikit-learn's MLPClassifier has no cosine schedule: it runs at this constant lr (and
#: its default L2 penalty, alpha=1e-4).
SKLEARN_LR = 0.05
TARGET_ACCURACY = 0.98
#: The targets, as the largest ratio of best wall times (:func:`targets`): simplenn with
#: a warm cache against the PyTorch script (both reaching TARGET_ACCURACY), and
#: simplenn's first run, with a cold cache, against the PyTorch script.
WARM_VS_TORCH_TARGET = 1 / 3
COLD_VS_TORCH_TARGET = 1.0
#: The longest one process may run before it counts as failed.
PROCESS_TIMEOUT_S = 3600
#: The last lines of a failed process's output that its JSON row keeps (``output_tail``).
ERROR_TAIL_LINES = 12

#: The contenders' keys, in the order they take turns (and the table's).
SIMPLENN_COLD, SIMPLENN_WARM, TORCH, SKLEARN = "simplenn-cold", "simplenn-warm", "torch", "sklearn"
TRAIN_ARGS = ("-m", "simplenn.train")
PEER_FUNCTIONS = {TORCH: "torch_recipe", SKLEARN: "sklearn_recipe"}
PEER_LIBRARIES = {
    TORCH: ("torch", "PyTorch is not installed; pip install torch"),
    SKLEARN: ("sklearn", "scikit-learn is not installed; pip install scikit-learn"),
}
PEER_LABELS = {
    TORCH: "PyTorch script (torch_recipe)",
    SKLEARN: "scikit-learn MLPClassifier (sklearn_recipe)",
}
NUMBA_MISSING = "numba is not installed; pip install numba"


# --------------------------------------------------------------------------------------
# The peers: the recipe written with other libraries. Each prints what
# python -m simplenn.train prints at the end, "test accuracy: X%".
# --------------------------------------------------------------------------------------
def torch_recipe(
    samples: int | None = None,
    epochs: int = EPOCHS,
    *,
    seed: int = SEED,
    say: Callable[[str], None] = print,
) -> float:
    """python -m simplenn.train's recipe as a plain PyTorch script; returns the final
    test accuracy. ``samples`` trains on the first ``samples`` training images only.

    ``nn.Linear`` layers (PyTorch's default initialisation), float32, ``optim.SGD`` with
    momentum 0.9, batch 128, lr 0.2 with cosine decay over all of the run's batches
    (stepped per batch), a new random order each epoch, pixels converted from uint8 per
    batch. PyTorch uses its default number of threads.
    """
    import numpy as np
    import torch
    import torch.nn.functional as F

    from ..data.datasets import load_mnist  # simplenn.load_mnist

    train, test = load_mnist()  # read-only uint8 arrays; torch.tensor copies
    X = torch.tensor(np.asarray(train.X[:samples]))
    Y = torch.tensor(np.asarray(train.y[:samples], dtype=np.int64))
    X_test = torch.tensor(np.asarray(test.X)).float() / 255
    Y_test = torch.tensor(np.asarray(test.y, dtype=np.int64))
    n = X.shape[0]

    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(784, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, 10)
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    total_steps = epochs * math.ceil(n / BATCH_SIZE)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * step / total_steps))
    )

    def accuracy() -> float:
        with torch.inference_mode():
            return float((model(X_test).argmax(dim=1) == Y_test).float().mean())

    acc = math.nan
    for epoch in range(1, epochs + 1):
        lr = optimizer.param_groups[0]["lr"]
        start = time.perf_counter()
        order = torch.randperm(n)
        loss_sum = torch.zeros((), dtype=torch.float64)
        for begin in range(0, n, BATCH_SIZE):
            rows = order[begin : begin + BATCH_SIZE]
            loss = F.cross_entropy(model(X[rows].float() / 255), Y[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            loss_sum += loss.detach() * rows.shape[0]
        seconds = time.perf_counter() - start
        acc = accuracy()
        say(
            f"epoch {epoch:>2}/{epochs}  loss {float(loss_sum) / n:.4f}  test {100 * acc:.2f}%  "
            f"lr {lr:.4f}  {seconds:.2f}s ({n / seconds:,.0f} img/s)"
        )
    say(f"test accuracy: {100 * acc:.2f}%")
    return acc


def sklearn_recipe(
    samples: int | None = None,
    epochs: int = EPOCHS,
    *,
    seed: int = SEED,
    say: Callable[[str], None] = print,
) -> float:
    """The recipe as scikit-learn's ``MLPClassifier``: 256 hidden ReLU units, solver
    "sgd", batch 128, momentum 0.9 (not Nesterov), ``max_iter`` = ``epochs`` passes at a
    constant lr of 0.05 (:data:`SKLEARN_LR`), float32 pixels / 255; returns the final test
    accuracy. ``samples`` trains on the first ``samples`` training images only."""
    import warnings

    import numpy as np
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    from ..data.datasets import load_mnist  # simplenn.load_mnist

    train, test = load_mnist()
    X = np.asarray(train.X[:samples], dtype=np.float32) / 255
    y = np.asarray(train.y[:samples])
    clf = MLPClassifier(
        hidden_layer_sizes=(HIDDEN,),
        solver="sgd",
        batch_size=BATCH_SIZE,
        momentum=MOMENTUM,
        learning_rate_init=SKLEARN_LR,
        max_iter=epochs,
        nesterovs_momentum=False,
        random_state=seed,
    )
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter is the epoch count
        clf.fit(X, y)
    seconds = time.perf_counter() - start
    acc = float(clf.score(np.asarray(test.X, dtype=np.float32) / 255, np.asarray(test.y)))
    say(f"trained {clf.n_iter_} epochs in {seconds:.2f}s (final loss {clf.loss_:.4f})")
    say(f"test accuracy: {100 * acc:.2f}%")
    return acc


# --------------------------------------------------------------------------------------
# Reading what a process printed.
# --------------------------------------------------------------------------------------
_ACCURACY = re.compile(r"^test accuracy: (?P<percent>[0-9.]+)%\s*$", re.M)
_COMPILE = re.compile(r"^compiled the (?P<backend>\S+) kernels in (?P<seconds>[0-9.]+)s", re.M)
_EPOCH = re.compile(r"^epoch\s+\d+/\d+\s.*\s(?P<seconds>[0-9.]+)s \([0-9,.]+ img/s\)\s*$", re.M)
_TRAINED = re.compile(r"^trained \d+ epochs in (?P<seconds>[0-9.]+)s", re.M)
_BACKEND = re.compile(r"backend='(?P<backend>[^']+)'")


@dataclass
class TrainOutput:
    """What a contender's output says: its final test accuracy (a fraction), the seconds
    ``python -m simplenn.train`` spent compiling (or loading) its kernels, the seconds of
    its training epochs summed, and simplenn's backend; None where it does not say."""

    accuracy: float | None
    compile_seconds: float | None
    train_seconds: float | None
    backend: str | None


def parse_train_output(text: str) -> TrainOutput:
    """Parse the standard output of ``python -m simplenn.train`` (or of a peer)."""
    accuracies = _ACCURACY.findall(text)
    compiled = _COMPILE.search(text)
    epochs = [float(m.group("seconds")) for m in _EPOCH.finditer(text)]
    trained = _TRAINED.search(text)
    backend = _BACKEND.search(text)
    train_seconds = sum(epochs) if epochs else float(trained.group("seconds")) if trained else None
    return TrainOutput(
        accuracy=round(float(accuracies[-1]) / 100, 6) if accuracies else None,
        compile_seconds=float(compiled.group("seconds")) if compiled else None,
        train_seconds=train_seconds,
        backend=(
            backend.group("backend") if backend else compiled.group("backend") if compiled else None
        ),
    )


# --------------------------------------------------------------------------------------
# Running the processes.
# --------------------------------------------------------------------------------------
@dataclass
class ProcessResult:
    wall_seconds: float
    returncode: int
    stdout: str
    stderr: str


def run_process(
    argv: list[str], env: dict[str, str], timeout: float = PROCESS_TIMEOUT_S
) -> ProcessResult:
    """Run ``argv`` to completion and time it (wall clock, from outside the process).
    The process dies with the bench (:func:`.lifeline.parent_death_preexec`)."""
    start = time.perf_counter()
    try:
        done = subprocess.run(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            preexec_fn=lifeline.parent_death_preexec(),
        )
    except subprocess.TimeoutExpired as exc:

        def text(b: Any) -> str:
            return b.decode(errors="replace") if isinstance(b, bytes) else (b or "")

        return ProcessResult(
            time.perf_counter() - start,
            -1,
            text(exc.stdout),
            text(exc.stderr) + f"\ntimed out after {timeout:g} s",
        )
    return ProcessResult(time.perf_counter() - start, done.returncode, done.stdout, done.stderr)


def library_missing(module: str) -> bool:
    """Whether ``module`` cannot be found (without importing it)."""
    return importlib.util.find_spec(module) is None


def base_env() -> dict[str, str]:
    """The children's environment: this one, with this simplenn first on PYTHONPATH and
    Numba's disk cache on (``SIMPLENN_NUMBA_CACHE`` unset)."""
    root = str(Path(__file__).resolve().parents[2])
    env = {
        k: v for k, v in os.environ.items() if k not in ("SIMPLENN_NUMBA_CACHE", "NUMBA_CACHE_DIR")
    }
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def simplenn_argv(numba: bool) -> list[str]:
    return [sys.executable, *TRAIN_ARGS, *(["--backend", "numba"] if numba else [])]


def peer_argv(key: str) -> list[str]:
    fn = PEER_FUNCTIONS[key]
    return [sys.executable, "-c", f"from simplenn.bench.recipe import {fn}; {fn}()"]


def shown_command(key: str, numba: bool) -> str:
    """The contender's command as a user would type it."""
    if key in PEER_FUNCTIONS:
        fn = PEER_FUNCTIONS[key]
        return f'python -c "from simplenn.bench.recipe import {fn}; {fn}()"'
    command = shlex.join(["python", *simplenn_argv(numba)[1:]])
    if key == SIMPLENN_COLD:
        return f"NUMBA_CACHE_DIR=<new empty directory> {command}"
    if key == SIMPLENN_WARM and numba:
        return f"NUMBA_CACHE_DIR=<the cold run's directory> {command}"
    return command


def _say(line: str) -> None:
    print(line, flush=True)  # a run takes minutes: show each line as it comes


def _count_files(directory: str) -> int:
    return sum(len(files) for _, _, files in os.walk(directory))


def _tail(result: ProcessResult) -> list[str]:
    """The last lines of what a failed process printed (stderr, else stdout)."""
    lines = (result.stderr.strip() or result.stdout.strip()).splitlines()
    return [line.rstrip() for line in lines[-ERROR_TAIL_LINES:]]


def _error(result: ProcessResult) -> str:
    """One line: the exit status and the process's last line (an error message, or the
    exception that ended a traceback)."""
    tail = _tail(result)
    return f"exit status {result.returncode}: {tail[-1].strip() if tail else '(no output)'}"


@dataclass
class Contender:
    """One contender's runs: one per repeat."""

    key: str
    label: str
    command: str
    runs: list[tuple[ProcessResult, TrainOutput]]
    skipped: str | None = None
    error: str | None = None
    output_tail: list[str] | None = None

    def best(self) -> tuple[ProcessResult, TrainOutput] | None:
        return min(self.runs, key=lambda r: r[0].wall_seconds) if self.runs else None


def measure(
    repeat: int,
    *,
    write: Callable[[str], None] = _say,
    run: Callable[..., ProcessResult] | None = None,
) -> tuple[list[Contender], dict]:
    """Run every contender that can run here ``repeat`` times, taking turns; returns the
    contenders (in table order) and what the cold runs left in their cache directories."""
    run = run or run_process
    numba = not library_missing("numba")
    contenders = {
        key: Contender(key, "", shown_command(key, numba), [])
        for key in (SIMPLENN_COLD, SIMPLENN_WARM, TORCH, SKLEARN)
    }
    contenders[SIMPLENN_COLD].label = "simplenn numba, cold cache"
    contenders[SIMPLENN_WARM].label = (
        "simplenn numba, warm cache" if numba else "simplenn (default backend)"
    )
    if not numba:
        contenders[SIMPLENN_COLD].skipped = NUMBA_MISSING
    for key in (TORCH, SKLEARN):
        contenders[key].label = PEER_LABELS[key]
        module, reason = PEER_LIBRARIES[key]
        if library_missing(module):
            contenders[key].skipped = reason
    for c in contenders.values():
        if c.skipped:
            write(f"skipped: {c.label}: {c.skipped}")

    env = base_env()
    cache_files: list[int] = []
    for turn in range(repeat):
        with tempfile.TemporaryDirectory(prefix="simplenn-recipe-numba-cache-") as cache_dir:
            for c in contenders.values():
                if c.skipped or c.error:
                    continue
                if c.key == SIMPLENN_WARM and numba and contenders[SIMPLENN_COLD].error:
                    c.error = "not run: the cold run, which fills its cache, failed"
                    write(f"FAILED: {c.label}: {c.error}")
                    continue
                if c.key in PEER_FUNCTIONS:
                    argv, child_env = peer_argv(c.key), env
                else:
                    argv = simplenn_argv(numba)
                    child_env = {**env, "NUMBA_CACHE_DIR": cache_dir}
                result = run(argv, child_env)
                if result.returncode != 0:
                    c.error, c.output_tail = _error(result), _tail(result)
                    write(f"FAILED: {c.label}: {c.error}")
                    continue
                parsed = parse_train_output(result.stdout)
                if parsed.accuracy is None:
                    c.error = "its output has no 'test accuracy: X%' line"
                    c.output_tail = _tail(result)
                    write(f"FAILED: {c.label}: {c.error}")
                    continue
                c.runs.append((result, parsed))
                compiled = (
                    ""
                    if parsed.compile_seconds is None
                    else f", compile {parsed.compile_seconds:.1f} s"
                )
                write(
                    f"run {turn + 1}/{repeat}: {c.label}: {result.wall_seconds:.1f} s{compiled}, "
                    f"test accuracy {100 * parsed.accuracy:.2f}%"
                )
                if c.key == SIMPLENN_COLD:
                    cache_files.append(_count_files(cache_dir))
                    if not cache_files[-1]:
                        write(
                            f"note: the cold run left {cache_dir} empty: Numba did not "
                            f"cache there, so the warm run is not warm"
                        )
    return list(contenders.values()), {"cache_files_after_cold_run": cache_files}


# --------------------------------------------------------------------------------------
# Reporting.
# --------------------------------------------------------------------------------------
def summarize(contenders: list[Contender]) -> list[dict[str, Any]]:
    """One row per contender: its best wall time and that run's accuracy, compile and
    training seconds, and both against simplenn's warm run."""
    rows: list[dict[str, Any]] = []
    reference = next((c.best() for c in contenders if c.key == SIMPLENN_WARM), None)
    for c in contenders:
        row: dict[str, Any] = {"name": c.key, "label": c.label, "command": c.command}
        if c.skipped:
            rows.append({**row, "skipped": c.skipped})
            continue
        if c.error:
            row["error"] = c.error
            if c.output_tail:
                row["output_tail"] = c.output_tail
        best = c.best()
        if best is None:
            rows.append(row)
            continue
        result, parsed = best
        row.update(
            {
                "wall_seconds": [round(r.wall_seconds, 3) for r, _ in c.runs],
                "best_wall_seconds": round(result.wall_seconds, 3),
                "accuracy": parsed.accuracy,
                "accuracies": [p.accuracy for _, p in c.runs],
                "reached_target": parsed.accuracy >= TARGET_ACCURACY,
                "compile_seconds": parsed.compile_seconds,
                "train_seconds": (
                    None if parsed.train_seconds is None else round(parsed.train_seconds, 3)
                ),
                "backend": parsed.backend,
            }
        )
        if reference is not None:
            ref_result, ref_parsed = reference
            row["time_vs_simplenn"] = round(result.wall_seconds / ref_result.wall_seconds, 4)
            row["accuracy_vs_simplenn"] = round(parsed.accuracy / ref_parsed.accuracy, 5)
            row["accuracy_points_vs_simplenn"] = round(
                100 * (parsed.accuracy - ref_parsed.accuracy), 2
            )
        rows.append(row)
    return rows


def cold_warm(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The cold run against the warm one: both wall times, their ratio and compile times."""
    by = {r["name"]: r for r in rows}
    cold, warm = by.get(SIMPLENN_COLD, {}), by.get(SIMPLENN_WARM, {})
    if "best_wall_seconds" not in cold or "best_wall_seconds" not in warm:
        return None
    return {
        "cold_seconds": cold["best_wall_seconds"],
        "warm_seconds": warm["best_wall_seconds"],
        "ratio": round(cold["best_wall_seconds"] / warm["best_wall_seconds"], 3),
        "cold_compile_seconds": cold["compile_seconds"],
        "warm_compile_seconds": warm["compile_seconds"],
    }


#: The targets of :func:`targets`: name, simplenn's run, its label in words, the largest
#: ratio to the PyTorch script's time, and whether both must reach TARGET_ACCURACY.
TARGETS = (
    ("warm_vs_torch", SIMPLENN_WARM, "warm", WARM_VS_TORCH_TARGET, True),
    ("cold_vs_torch", SIMPLENN_COLD, "cold", COLD_VS_TORCH_TARGET, False),
)


def _not_measured(row: dict[str, Any], label: str) -> str | None:
    """Why ``row`` has no best wall time (None when it has one)."""
    if "best_wall_seconds" in row:
        return None
    if "skipped" in row:
        return f"{label} skipped: {row['skipped']}"
    if "error" in row:
        return f"{label} failed: {row['error']}"
    return f"{label} did not run"


def targets(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The product's targets against the PyTorch script, from the best wall time of each
    run in ``rows`` (:func:`summarize`'s), by name (``warm_vs_torch``, ``cold_vs_torch``).

    Each holds ``ratio`` (simplenn's seconds / the PyTorch script's), ``target`` (the
    largest ratio allowed), ``simplenn_seconds``, ``torch_seconds``, ``limit_seconds``
    (the most simplenn may take), ``margin_seconds`` (the limit less simplenn's time:
    negative when missed), for the warm target ``accuracies_reached`` (both runs reached
    TARGET_ACCURACY) and ``holds``; or, where either run has no time, ``holds`` None and
    the ``reason``."""
    by = {r["name"]: r for r in rows}
    torch = by.get(TORCH, {"name": TORCH})
    out: dict[str, dict[str, Any]] = {}
    for name, key, label, target, needs_accuracy in TARGETS:
        mine = by.get(key, {"name": key})
        reason = _not_measured(mine, f"simplenn's {label} run") or _not_measured(
            torch, "the PyTorch script"
        )
        if reason is not None:
            out[name] = {"target": round(target, 4), "holds": None, "reason": reason}
            continue
        seconds, torch_seconds = mine["best_wall_seconds"], torch["best_wall_seconds"]
        limit = target * torch_seconds
        entry = {
            "ratio": round(seconds / torch_seconds, 4),
            "target": round(target, 4),
            "simplenn_seconds": seconds,
            "torch_seconds": torch_seconds,
            "limit_seconds": round(limit, 3),
            "margin_seconds": round(limit - seconds, 3),
        }
        holds = seconds <= limit
        if needs_accuracy:
            entry["accuracies_reached"] = bool(mine["reached_target"] and torch["reached_target"])
            holds = holds and entry["accuracies_reached"]
        out[name] = {**entry, "holds": holds}
    return out


def target_lines(rows: list[dict[str, Any]]) -> list[str]:
    """:func:`targets` in words, one line each: the ratio, the target and by how much it
    holds or was missed."""
    lines, measured = [], targets(rows)
    for name, key, label, _, needs_accuracy in TARGETS:
        t = measured[name]
        head = f"{label}/torch"
        if t["holds"] is None:
            lines.append(f"{head} - (target ≤ {t['target']:.2f}: not measured: {t['reason']})")
            continue
        margin = t["margin_seconds"]
        verdict = f"held, {margin:.2f} s to spare" if margin >= 0 else f"missed by {-margin:.2f} s"
        times = (
            f"{label} {t['simplenn_seconds']:.2f} s against PyTorch's {t['torch_seconds']:.2f} "
            f"s, at most {t['limit_seconds']:.2f} s allowed"
        )
        accuracy = ""
        if needs_accuracy:
            by = {r["name"]: r for r in rows}
            mine, torch = by[key], by[TORCH]
            reached = "both reached" if t["accuracies_reached"] else "not both reached"
            accuracy = (
                f"; test accuracy {100 * mine['accuracy']:.2f}% and "
                f"{100 * torch['accuracy']:.2f}%, {reached} {100 * TARGET_ACCURACY:.1f}%"
            )
            if margin >= 0 and not t["accuracies_reached"]:
                verdict = f"missed on accuracy, {margin:.2f} s to spare"
        lines.append(
            f"{head} {t['ratio']:.2f}x (target ≤ {t['target']:.2f}: {verdict}: {times}{accuracy})"
        )
    return lines


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def format_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table (skipped contenders are left out: they are listed
    above it)."""
    lines = [
        "| run | wall s | vs simplenn | compile s | training s | test accuracy | "
        "vs simplenn | ≥ 98% |",
        "|---|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for r in rows:
        if "skipped" in r:
            continue
        if "best_wall_seconds" not in r:
            lines.append(f"| {r['label']} | FAILED: {r.get('error', '')} | | | | | | |")
            continue
        ratio = r.get("time_vs_simplenn")
        points = r.get("accuracy_points_vs_simplenn")
        lines.append(
            f"| {r['label']} | {r['best_wall_seconds']:.1f} | "
            f"{_num(ratio, '.2f') + 'x' if ratio is not None else '-'} | "
            f"{_num(r['compile_seconds'], '.1f')} | {_num(r['train_seconds'], '.1f')} | "
            f"{100 * r['accuracy']:.2f}% | "
            f"{format(points, '+.2f') + ' pt' if points is not None else '-'} | "
            f"{'yes' if r['reached_target'] else 'no'} |"
        )
    return "\n".join(lines)


def summary_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The cold/warm ratio, each peer against simplenn and the targets
    (:func:`target_lines`), in words."""
    out = []
    cw = cold_warm(rows)
    if cw is not None:
        cold_compile = _num(cw["cold_compile_seconds"], ".1f")
        warm_compile = _num(cw["warm_compile_seconds"], ".1f")
        out.append(
            f"first run: cold {cw['cold_seconds']:.1f} s, warm {cw['warm_seconds']:.1f} s: "
            f"cold/warm {cw['ratio']:.2f}x (compile: {cold_compile} s cold, "
            f"{warm_compile} s warm, loading the cache)"
        )
    by = {r["name"]: r for r in rows}
    ref = by.get(SIMPLENN_WARM, {})
    if "best_wall_seconds" in ref:
        parts = [f"simplenn {ref['best_wall_seconds']:.1f} s ({100 * ref['accuracy']:.2f}%)"]
        for key in (TORCH, SKLEARN):
            r = by.get(key, {})
            if "best_wall_seconds" in r:
                parts.append(
                    f"{key} {r['best_wall_seconds']:.1f} s ({100 * r['accuracy']:.2f}%, "
                    f"{r['time_vs_simplenn']:.2f}x simplenn's time)"
                )
        out.append("time to accuracy: " + ", ".join(parts))
    return out + target_lines(rows)


def run_suite(
    *,
    repeat: int,
    json_path: Path | None,
    command: str,
    prog: str = "python -m simplenn.bench",
    write: Callable[[str], None] = _say,
    run: Callable[..., ProcessResult] | None = None,
) -> int:
    """Measure, print the table (and write ``json_path``); 0, or 1 when a contender failed."""
    from .._version import __version__
    from ..io.atomic import atomic_write_bytes
    from . import sysinfo

    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    load_before = sysinfo.load_average()
    write(f"simplenn {__version__} recipe benchmark, {date}")
    write(f"command: {command}")
    write(
        f"work: each contender is one process, timed wall clock from outside (start-up, "
        f"imports, data loading, compilation, evaluation count); recipe 784-{HIDDEN}-10 "
        f"float32, SGD momentum {MOMENTUM}, batch {BATCH_SIZE}, lr {LR} cosine over {EPOCHS} "
        f"epochs (scikit-learn: lr {SKLEARN_LR} constant), bundled MNIST; best of {repeat} "
        f"turn(s); 'vs simplenn' is against simplenn's warm-cache run; warm/torch and "
        f"cold/torch against the PyTorch script, whose every run is warm (it has no "
        f"compile cache)"
    )
    gpus = sysinfo.gpu_names()
    versions = {k: v for k, v in sysinfo.library_versions().items() if v}
    try:
        versions.setdefault("scikit-learn", importlib.metadata.version("scikit-learn"))
    except importlib.metadata.PackageNotFoundError:
        pass
    write(f"CPU: {sysinfo.cpu_model()}")
    write(f"GPU: {'; '.join(gpus) if gpus else 'none'}")
    write("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    started = time.perf_counter()
    contenders, caches = measure(repeat, write=write, run=run)
    rows = summarize(contenders)
    load = f"{load_before} before, {sysinfo.load_average()} after (other processes skew timings)"
    table = format_table(rows)
    write(f"load average (1 min): {load}")
    write("")
    write(table)
    write("")
    for line in summary_lines(rows):
        write(line)
    if json_path is not None:
        report = {
            "suite": "recipe",
            "date": date,
            "command": command,
            "cpu": sysinfo.cpu_model(),
            "gpus": gpus,
            "load_average": load,
            "blas": sysinfo.blas_libraries(),
            "versions": versions,
            "openblas_env": sysinfo.openblas_env(),
            "recipe": {
                "hidden": HIDDEN,
                "epochs": EPOCHS,
                "batch_size": BATCH_SIZE,
                "lr": LR,
                "lr_schedule": "cosine",
                "momentum": MOMENTUM,
                "dtype": "float32",
                "sklearn_lr": SKLEARN_LR,
                "target_accuracy": TARGET_ACCURACY,
            },
            "repeat": repeat,
            "seconds": round(time.perf_counter() - started, 3),
            "cold_warm": cold_warm(rows),
            "targets": targets(rows),
            **caches,
            "skipped": [
                {"name": r["name"], "reason": r["skipped"]} for r in rows if "skipped" in r
            ],
            "rows": rows,
        }
        atomic_write_bytes(json_path, (json.dumps(report, indent=2) + "\n").encode())
        write(f"wrote {json_path}")
    failed = [r["label"] for r in rows if "error" in r]
    if failed:
        print(f"{prog}: error: {', '.join(failed)} failed (see FAILED above)", file=sys.stderr)
        return 1
    return 0
