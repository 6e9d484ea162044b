"""``python -m simplenn.bench --suite gpu``: time per MNIST epoch on the GPU backend.

Every configuration trains the 784-128-10 network (float32, SGD momentum 0.9, lr 0.01,
constant schedule) over the first ``samples`` MNIST training images, already on the
device, for one warm-up epoch (kernel compilation, CUDA graph capture) and ``epochs``
timed ones; the median of the timed epochs counts. The configurations:

- ``cupy`` at each batch size, with CUDA graphs on and off (``SIMPLENN_CUDA_GRAPHS``,
  :data:`~simplenn.backends.cupy.GRAPHS_ENV_VAR`), timed twice: with CUDA
  events around fit's chunk loop (chunks of ``CHUNK_SAMPLES``, each run by
  :meth:`TwoLayerNet.train_steps` and its losses read back, as :func:`simplenn.fit`
  does), and as :func:`simplenn.fit` reports it (device synchronized, wall clock);
- ``numba`` at batch 512, timed by :func:`simplenn.fit` (the CPU comparison);
- PyTorch CUDA eager at batch 128 (the ``torch-cuda`` peer of :mod:`.peers`), timed
  with CUDA events.

A part that cannot run here (no GPU, no CuPy, no PyTorch) is skipped with its reason,
so on a CPU-only machine the suite is a smoke test of itself that times numba alone.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ..backends import probe_backend
from ..core.model import TwoLayerNet
from ..core.network import training_path
from ..core.training import chunk_samples, fit
from ..errors import SimplennError
from ..optim import SGD
from . import sysinfo
from .contenders import make_contender, probe_contender
from .workloads import MOMENTUM, N_CLASSES, N_INPUTS, THROUGHPUT_LR

HIDDEN = 128
LR = THROUGHPUT_LR
SEED = 0
CUPY_BATCH_SIZES = (128, 512, 2048)
NUMBA_BATCH = 512
TORCH_BATCH = 128
DEFAULT_EPOCHS = 5
JSON_NAME, TABLE_NAME = "benchmark.json", "benchmark.md"


class GpuBenchmarkError(SimplennError, RuntimeError):
    """A configuration of the GPU suite failed (e.g. its loss became non-finite)."""


def _summary(ms: list[float], n: int) -> dict[str, Any]:
    timed = ms[1:] or ms
    median = statistics.median(timed)
    return {
        "median_ms": round(median, 3),
        "min_ms": round(min(timed), 3),
        "warmup_ms": round(ms[0], 3),
        "images_per_s": round(n / (median / 1e3)),
    }


def event_timed_epochs(
    net: TwoLayerNet, X: Any, Y: Any, batch_size: int, epochs: int
) -> list[float]:
    """Milliseconds of 1 + ``epochs`` epochs (the first a warm-up) of fit's chunk loop on
    a cupy network, timed with CUDA events; each chunk is one :meth:`TwoLayerNet.train_steps`
    call whose losses are read back and checked, as :func:`simplenn.fit` does."""
    import cupy

    ops, n = net.ops, int(X.shape[0])
    optimizer = SGD(momentum=MOMENTUM)
    state = optimizer.init(net.params, ops.xp.zeros_like)
    chunk = chunk_samples(batch_size)
    rng = np.random.default_rng(SEED)
    times = []
    for epoch in range(1 + epochs):
        order = ops.asarray(rng.permutation(n), dtype=np.int64)
        ops.synchronize()
        start, stop = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        for begin in range(0, n, chunk):
            rows = order[begin : min(n, begin + chunk)]
            state, losses = net.train_steps(
                X,
                Y,
                rows,
                state,
                optimizer=optimizer,
                batch_size=batch_size,
                lrs=np.full(-(-rows.shape[0] // batch_size), LR),
            )
            if not np.isfinite(ops.to_numpy(losses)).all():
                raise GpuBenchmarkError(
                    f"the loss became non-finite in epoch {epoch + 1}, chunk at sample {begin}"
                )
        stop.record()
        stop.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, stop))
    return times


def fit_timed_epochs(backend: str, X: Any, y: Any, batch_size: int, epochs: int) -> list[float]:
    """Milliseconds per epoch as :func:`simplenn.fit` reports them (device synchronized),
    1 + ``epochs`` epochs, the first a warm-up."""
    net = TwoLayerNet(N_INPUTS, HIDDEN, N_CLASSES, backend=backend, seed=SEED)
    history = fit(
        net,
        (X, y),
        epochs=1 + epochs,
        batch_size=batch_size,
        lr=LR,
        optimizer=SGD(momentum=MOMENTUM),
        lr_schedule="constant",
        seed=SEED,
        eval_train=False,
        interruptible=False,
    )
    return [e.seconds * 1e3 for e in history.epochs]


def torch_cuda_epochs(
    X: np.ndarray, y: np.ndarray, test_X: np.ndarray, batch_size: int, epochs: int
) -> tuple[list[float], str]:
    """Milliseconds of 1 + ``epochs`` epochs of the ``torch-cuda`` peer, CUDA events."""
    peer = make_contender("torch-cuda", HIDDEN, X, y, test_X, SEED)
    torch, n = peer.torch, int(X.shape[0])
    times = []
    for _ in range(1 + epochs):
        peer.synchronize()
        start = torch.cuda.Event(enable_timing=True)
        stop = torch.cuda.Event(enable_timing=True)
        start.record()
        peer.train_epoch(batch_size, n, lr=LR, momentum=MOMENTUM)
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return times, torch.__version__


class _Run:
    """The rows measured so far, each printed as it comes."""

    def __init__(self, n: int, write: Callable[[str], None]) -> None:
        self.n, self.write, self.rows = n, write, []

    def measure(
        self,
        label: str,
        fields: dict[str, Any],
        work: Callable[[], list[float] | tuple[list[float], dict[str, Any]]],
    ) -> None:
        """Run ``work`` (milliseconds per epoch, optionally with extra fields) and record
        its summary; an exception is recorded as the row's error and the run goes on."""
        try:
            result = work()
        except Exception as exc:  # one failing configuration must not lose the others
            error = f"{type(exc).__name__}: {exc}"
            self.rows.append({**fields, "error": error})
            print(f"FAILED: {label}: {error}", file=sys.stderr, flush=True)
            return
        ms, extra = result if isinstance(result, tuple) else (result, {})
        row = {**fields, **extra, **_summary(ms, self.n)}
        self.rows.append(row)
        self.write(
            f"{label}: median {row['median_ms']:.3f} ms/epoch (min {row['min_ms']:.3f}, "
            f"warm-up {row['warmup_ms']:.3f}), {row['images_per_s']:,} images/s"
        )

    def skip(self, part: str, contender: str, reason: str | None) -> None:
        reason = reason or "unavailable"
        self.rows.append({"contender": contender, "part": part, "skipped": reason})
        self.write(f"skipped: {part}: {reason}")


def _cupy_part(
    run: _Run, X_host: np.ndarray, y_host: np.ndarray, batch_sizes: tuple[int, ...], epochs: int
) -> None:
    import cupy

    from ..backends.cupy import GRAPHS_ENV_VAR

    X, Y = cupy.asarray(X_host), cupy.asarray(y_host.astype(np.int64))
    before = os.environ.get(GRAPHS_ENV_VAR)
    try:
        for graphs in (True, False):
            os.environ[GRAPHS_ENV_VAR] = "1" if graphs else "0"
            on = "on" if graphs else "off"
            for bs in batch_sizes:
                fields = {"contender": "cupy", "batch_size": bs, "cuda_graphs": graphs}

                def events(bs: int = bs) -> tuple[list[float], dict[str, Any]]:
                    net = TwoLayerNet(N_INPUTS, HIDDEN, N_CLASSES, backend="cupy", seed=SEED)
                    ms = event_timed_epochs(net, X, Y, bs, epochs)
                    path = training_path(net.ops, SGD(momentum=MOMENTUM), "pixels", bs)
                    wrapper = getattr(path.train_steps, "chunk", None)
                    return ms, {"graphs_disabled_reason": getattr(wrapper, "disabled_reason", None)}

                run.measure(
                    f"cupy batch {bs}, CUDA graphs {on}, CUDA events",
                    {**fields, "timer": "cuda-events, fit's chunk loop"},
                    events,
                )
                run.measure(
                    f"cupy batch {bs}, CUDA graphs {on}, fit",
                    {**fields, "timer": "fit (synchronized wall clock)"},
                    lambda bs=bs: fit_timed_epochs("cupy", X, Y, bs, epochs),
                )
    finally:
        if before is None:
            os.environ.pop(GRAPHS_ENV_VAR, None)
        else:
            os.environ[GRAPHS_ENV_VAR] = before


def format_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table."""
    lines = [
        "| contender | timer | batch | CUDA graphs | median ms/epoch | min ms | "
        "warm-up ms | images/s |",
        "|---|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['contender']} | skipped: {r['skipped']} | | | | | | |")
        elif "error" in r:
            lines.append(
                f"| {r['contender']} | {r['timer']}: FAILED: {r['error']} | "
                f"{r['batch_size']} | {r.get('cuda_graphs', '')} | | | | |"
            )
        else:
            lines.append(
                f"| {r['contender']} | {r['timer']} | {r['batch_size']} | "
                f"{r.get('cuda_graphs', '')} | {r['median_ms']} | {r['min_ms']} | "
                f"{r['warmup_ms']} | {r['images_per_s']:,} |"
            )
    return "\n".join(lines)


def run_suite(
    *,
    samples: int,
    epochs: int,
    batch_sizes: tuple[int, ...],
    out_dir: Path | None,
    json_path: Path | None,
    command: str,
    prog: str = "python -m simplenn.bench",
    write: Callable[[str], None] = print,
) -> int:
    """Measure every configuration that runs here, print the table, write
    ``out_dir/benchmark.json`` and ``out_dir/benchmark.md`` (and the JSON to
    ``json_path``); returns 0, or 1 when a configuration failed."""
    from .._version import __version__
    from ..data.datasets import load_mnist
    from ..io.atomic import atomic_write_bytes

    train, test = load_mnist()
    X_host, y_host = train.X[:samples], train.y[:samples]
    n = int(X_host.shape[0])
    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    cupy_info = probe_backend("cupy")
    versions = {k: v for k, v in sysinfo.library_versions().items() if v}
    write(f"simplenn {__version__} GPU benchmark, {date}")
    write(f"command: {command}")
    write(f"GPU: {cupy_info.device or 'none'}; CPU: {sysinfo.cpu_model()}")
    write("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    write(
        f"work: {n} MNIST images per epoch, 784-{HIDDEN}-10 float32, SGD momentum "
        f"{MOMENTUM}, lr {LR}; median of {epochs} timed epoch(s) after one warm-up epoch"
    )
    run = _Run(n, write)
    started = time.perf_counter()

    if cupy_info.available:
        _cupy_part(run, X_host, y_host, batch_sizes, epochs)
    else:
        run.skip(
            f"cupy (CUDA graphs on and off, batch {'/'.join(map(str, batch_sizes))})",
            "cupy",
            cupy_info.reason,
        )

    numba_info = probe_backend("numba")
    if numba_info.available:
        run.measure(
            f"numba batch {NUMBA_BATCH}, fit",
            {"contender": "numba", "timer": "fit (wall clock)", "batch_size": NUMBA_BATCH},
            lambda: fit_timed_epochs("numba", X_host, y_host, NUMBA_BATCH, epochs),
        )
    else:
        run.skip(f"numba (batch {NUMBA_BATCH})", "numba", numba_info.reason)

    torch_info = probe_contender("torch-cuda")
    if torch_info.available:

        def torch_work() -> tuple[list[float], dict[str, Any]]:
            ms, version = torch_cuda_epochs(X_host, y_host, test.X[:1], TORCH_BATCH, epochs)
            return ms, {"torch": version}

        run.measure(
            f"torch-cuda eager batch {TORCH_BATCH}, CUDA events",
            {"contender": "torch-cuda eager", "timer": "cuda-events", "batch_size": TORCH_BATCH},
            torch_work,
        )
    else:
        run.skip(f"torch-cuda eager (batch {TORCH_BATCH})", "torch-cuda eager", torch_info.reason)

    table = format_table(run.rows)
    write("")
    write(table)
    report = {
        "date": date,
        "command": command,
        "epochs_timed": epochs,
        "samples": n,
        "hidden": HIDDEN,
        "lr": LR,
        "momentum": MOMENTUM,
        "device": cupy_info.device,
        "cpu": sysinfo.cpu_model(),
        "versions": versions,
        "seconds": round(time.perf_counter() - started, 3),
        "rows": run.rows,
    }
    blob = (json.dumps(report, indent=2) + "\n").encode()
    targets = [p for p in (out_dir and out_dir / JSON_NAME, json_path) if p is not None]
    for path in dict.fromkeys(targets):
        atomic_write_bytes(path, blob)
        write(f"wrote {path}")
    if out_dir is not None:
        header = (
            f"Time per epoch of {n} MNIST images, 784-{HIDDEN}-10, float32, median of "
            f"{epochs} epoch(s) after one warm-up epoch. Device: "
            f"{cupy_info.device or 'none'}. Command: `{command}`\n\n"
        )
        atomic_write_bytes(out_dir / TABLE_NAME, (header + table + "\n").encode())
        write(f"wrote {out_dir / TABLE_NAME}")
    failed = [r for r in run.rows if "error" in r]
    if failed:
        print(
            f"{prog}: error: {len(failed)} configuration(s) failed (see FAILED above)",
            file=sys.stderr,
        )
        return 1
    return 0
