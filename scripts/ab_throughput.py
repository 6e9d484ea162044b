"""Side-by-side training throughput of source trees and backends, in one process.

Each ``LABEL=TREE[:BACKEND]`` names a checkout of this repository (a ``git worktree`` of
another revision, or ``.``) and a backend (``numba`` by default, or ``numpy``). Every
tree's ``simplenn`` package is imported under a name of its own (``simplenn_LABEL``),
so several versions of the code live in one process, and for each batch size the
variants take turns running one chunk of ``--samples`` training samples
(``train_steps`` of float32 MNIST, lr 0.01, momentum 0.9) for ``--rounds`` rounds,
alternating who goes first. Slow spells of a shared machine then hit every variant
alike; the script prints the best and the median samples/s of each, and each as a
ratio to the first variant. Numba's disk cache is off (``SIMPLENN_NUMBA_CACHE=0``)
unless set, so two trees never share cached kernels. Example, the change since a
revision against the NumPy backend::

    git worktree add /tmp/before REV
    flock /tmp/simplenn-timing.lock python scripts/ab_throughput.py \\
        numpy=.:numpy before=/tmp/before after=. --batch-sizes 1 8 32 128
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("SIMPLENN_NUMBA_CACHE", "0")

OPS_CLASSES = {"numba": "NumbaOps", "numpy": "NumpyOps"}


def import_tree(label: str, tree: Path, copies: Path):
    """``tree``'s simplenn package, copied under ``copies`` and imported as
    ``simplenn_<label>``."""
    if not label.isidentifier():
        raise SystemExit(f"label {label!r} must be a Python identifier")
    package = copies / label / f"simplenn_{label}"
    shutil.copytree(tree / "simplenn", package,
                    ignore=shutil.ignore_patterns("__pycache__", "_data"))
    sys.path.insert(0, str(package.parent))
    return importlib.import_module(package.name)


def load_variant(label: str, tree: Path, backend: str, hidden: int, dtype: str, copies: Path):
    """A TwoLayerNet from ``tree``'s simplenn, imported as ``simplenn_<label>``."""
    if backend not in OPS_CLASSES:
        raise SystemExit(f"backend {backend!r} must be one of {sorted(OPS_CLASSES)}")
    simplenn_copy = import_tree(label, tree, copies)
    name = simplenn_copy.__name__
    try:  # a backend of its own subpackage, or of a module of the flat layout
        backend_module = importlib.import_module(f"{name}.backends.{backend}")
        getattr(backend_module, OPS_CLASSES[backend])
    except (ModuleNotFoundError, AttributeError):
        backend_module = importlib.import_module(f"{name}.backends.{backend}_backend")
    ops = getattr(backend_module, OPS_CLASSES[backend])(dtype)
    net = simplenn_copy.TwoLayerNet(n_hidden=hidden, backend=ops, dtype=dtype, seed=0)
    if hasattr(net.ops, "warmup"):  # a tree from before warm_up moved to the core
        net.ops.warmup()
    else:
        importlib.import_module(f"{name}.core.model").warm_up(net.ops)
    return net


#: One set of parameter and velocity arrays that every variant trains in turn.
_BUFFERS: dict = {}


def _placed(net) -> tuple[list, list]:
    """``net``'s parameters and zero velocities, copied into arrays shared by every
    variant: where arrays lie in memory moves throughput by up to 15% (cache-set and
    4K-aliasing effects), so all variants run on the same addresses."""
    params, velocities = [], []
    for key in ("W1", "b1", "W2", "b2"):
        value = net.params[key]
        if key not in _BUFFERS:
            _BUFFERS[key] = (np.empty_like(value), np.empty_like(value))
        p, v = _BUFFERS[key]
        np.copyto(p, value)
        v[...] = 0
        params.append(p)
        velocities.append(v)
    return params, velocities


def run_chunk(net, X, Y, order, batch_size: int, scalar) -> float:
    """Seconds to train on the samples ``order`` (fresh velocities), as ``fit`` calls
    the backend: one call per chunk when compiled, one per batch when interpreted.
    A tree whose ``train_steps`` writes its losses into a last argument (and updates
    in place) is called that way."""
    params, velocities = _placed(net)
    train_steps = net.functions.train_steps_pixels
    losses_argument = len(inspect.signature(getattr(train_steps, "py_func", train_steps))
                          .parameters) == 16
    extra = (np.zeros(order.shape[0]),) if losses_argument else ()
    per_call = (order.shape[0] if getattr(net.ops, "compiles_chunks", net.ops.name == "numba")
                else batch_size)
    start = time.perf_counter()
    for begin in range(0, order.shape[0], per_call):
        out = train_steps(*params, *velocities, X, Y, order[begin:begin + per_call],
                          batch_size, scalar(0.01), scalar(0.9), scalar(0.0), *extra)
        if not losses_argument:
            params, velocities = out[:4], out[4:8]
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="+", metavar="LABEL=TREE[:BACKEND]")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32, 128, 512])
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--samples", type=int, default=8192, help="samples per timed chunk")
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()

    import simplenn

    train, _ = simplenn.load_mnist()
    X, Y = np.ascontiguousarray(train.X), train.y.astype(np.int64)
    scalar = np.dtype(args.dtype).type
    with tempfile.TemporaryDirectory() as copies:
        variants = []
        for spec in args.variants:
            label, _, rest = spec.partition("=")
            tree, _, backend = rest.partition(":")
            variants.append((label, load_variant(label, Path(tree), backend or "numba",
                                                 args.hidden, args.dtype, Path(copies))))
        print(f"{args.dtype}, hidden {args.hidden}, {args.samples} samples a turn, "
              f"{args.rounds} rounds; samples/s best / median (ratio to {variants[0][0]})")
        rng = np.random.default_rng(0)
        for batch_size in args.batch_sizes:
            seconds = {label: [] for label, _ in variants}
            for r in range(args.rounds + 1):  # round 0 warms up
                order = rng.permutation(X.shape[0])[:args.samples].astype(np.int64)
                for label, net in variants if r % 2 == 0 else variants[::-1]:
                    elapsed = run_chunk(net, X, Y, order, batch_size, scalar)
                    if r:
                        seconds[label].append(elapsed)
            best0 = median0 = None
            cells = []
            for label, _ in variants:
                best = args.samples / min(seconds[label])
                median = args.samples / statistics.median(seconds[label])
                best0, median0 = best0 or best, median0 or median
                cells.append(f"{label} {best:9,.0f} / {median:9,.0f} "
                             f"({best / best0:.2f}x / {median / median0:.2f}x)")
            print(f"batch {batch_size:5d}  " + "  |  ".join(cells), flush=True)


if __name__ == "__main__":
    main()
