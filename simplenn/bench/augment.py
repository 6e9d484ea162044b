"""``python -m simplenn.bench --suite augment``: what distorting the training batches
costs an epoch.

Each turn trains one fresh network per augmentation (``none``, ``affine``, ``elastic``)
for two epochs through :func:`simplenn.fit`, the path ``python -m simplenn.train`` takes,
and keeps the second epoch's training time (:attr:`EpochStats.seconds`: the steps and
the distortions, not the evaluation); the kinds take turns, ``--repeat`` turns. A
shared machine's speed drifts over minutes, so the cost of a kind is the median over
the turns of its epoch time over the ``none`` epoch of the same turn, minus one; each
kind's best epoch is reported too. Beside it, the distortion work alone: drawing,
elastic fields and warping an epoch's rows in turn (:meth:`Augmenter.distort`) in the
backend's image ops' :meth:`~simplenn.backends.images.ImageOps.training` context, as
``fit`` does.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

#: The setting the cost is judged at.
HIDDEN = 800
BATCH_SIZE = 128
KINDS = ("none", "affine", "elastic")


def _say(line: str) -> None:
    print(line, flush=True)


def epoch_seconds(backend: str, kind: str, hidden: int, batch_size: int, train: Any) -> float:
    """The training seconds of the second epoch of a fresh ``fit`` with ``augment=kind``."""
    from ..core.model import TwoLayerNet
    from ..core.training import fit

    net = TwoLayerNet(train.n_features, hidden, 10, backend=backend, seed=0)
    history = fit(net, train, epochs=2, batch_size=batch_size, lr=0.05, augment=kind)
    return history.epochs[-1].seconds


def distortion_seconds(backend: str, kind: str, batch_size: int, train: Any, chunk: int) -> float:
    """Seconds to distort every training row once, ``chunk`` rows per call, in turn, in
    the training context of the backend's image ops (as ``fit`` does)."""
    from ..backends import get_backend
    from ..core.augment import Augmenter

    ops = get_backend(backend)
    augmenter = Augmenter(ops, kind, 0, train.n_features)
    X = ops.asarray(train.X, dtype=np.uint8)
    order = ops.asarray(np.random.default_rng(0).permutation(len(train)), dtype=np.int64)
    n = len(train)
    with augmenter.images.training():
        augmenter.distort(X, order[:chunk], 1, 0, batch_size)  # compiles, where it compiles
        start = time.perf_counter()
        for begin in range(0, n, chunk):
            out = augmenter.distort(X, order[begin : begin + chunk], 1, begin, batch_size)
        ops.synchronize(out)
        return time.perf_counter() - start


def run_suite(
    *,
    backend: str | None,
    hidden: int,
    batch_size: int,
    repeat: int,
    samples: int,
    json_path: Path | None,
    command: str,
    write: Callable[[str], None] = _say,
) -> int:
    """Measure, print the table (and write ``json_path``); returns 0."""
    from .._version import __version__
    from ..backends import resolve_backend_name
    from ..core.training import chunk_samples
    from ..data.datasets import load_mnist
    from ..io.atomic import atomic_write_bytes
    from . import sysinfo

    name = backend or resolve_backend_name("auto")
    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    load_before = sysinfo.load_average()
    write(f"simplenn {__version__} augmentation cost, {date}")
    write(f"command: {command}")
    write(
        f"work: backend {name}, 784-{hidden}-10 float32, batch {batch_size}, {samples} "
        f"bundled MNIST training images; "
        f"the training seconds of the second epoch of fit(augment=...), {repeat} turn(s); "
        f"'cost': the median over the turns of epoch / the turn's none epoch - 1; "
        f"'distortion work' distorts every row once, in turn, without training"
    )
    write(f"CPU: {sysinfo.cpu_model()}")
    train = load_mnist()[0][:samples]
    started = time.perf_counter()
    epochs: dict[str, list[float]] = {k: [] for k in KINDS}
    for turn in range(repeat):
        for kind in KINDS:
            epochs[kind].append(epoch_seconds(name, kind, hidden, batch_size, train))
            write(f"  turn {turn + 1}/{repeat}, {kind}: {epochs[kind][-1]:.3f} s")
    chunk = chunk_samples(batch_size)
    work = {kind: distortion_seconds(name, kind, batch_size, train, chunk) for kind in KINDS[1:]}
    best = {kind: min(times) for kind, times in epochs.items()}
    rows = [
        {
            "augment": kind,
            "epoch_seconds": round(best[kind], 4),
            "epochs_seconds": [round(t, 4) for t in epochs[kind]],
            "cost": round(float(np.median(np.divide(epochs[kind], epochs["none"]))) - 1, 4),
            "distortion_seconds": None if kind == "none" else round(work[kind], 4),
        }
        for kind in KINDS
    ]
    write(f"load average (1 min): {load_before} before, {sysinfo.load_average()} after")
    write("")
    write(f"{'augment':<8} {'best epoch (s)':>14} {'cost':>8} {'distortion work (s)':>20}")
    for r in rows:
        work_s = "" if r["distortion_seconds"] is None else f"{r['distortion_seconds']:.3f}"
        write(
            f"{r['augment']:<8} {r['epoch_seconds']:>14.3f} {100 * r['cost']:>7.1f}% {work_s:>20}"
        )
    if json_path is not None:
        report = {
            "suite": "augment",
            "date": date,
            "command": command,
            "cpu": sysinfo.cpu_model(),
            "blas": sysinfo.blas_libraries(),
            "versions": {k: v for k, v in sysinfo.library_versions().items() if v},
            "openblas_env": sysinfo.openblas_env(),
            "load_average": f"{load_before} before, {sysinfo.load_average()} after",
            "backend": name,
            "hidden": hidden,
            "batch_size": batch_size,
            "samples": samples,
            "repeat": repeat,
            "seconds": round(time.perf_counter() - started, 3),
            "rows": rows,
        }
        atomic_write_bytes(json_path, (json.dumps(report, indent=2) + "\n").encode())
        write(f"wrote {json_path}")
    return 0
